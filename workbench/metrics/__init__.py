"""What a model is measured by: downstream accuracy (:mod:`.downstream`) and geometry (:mod:`.geometry`)."""
