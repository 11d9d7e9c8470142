"""The run store (:mod:`.runs`) and the RESULTS.md tables regenerated from it (:mod:`.report`)."""
