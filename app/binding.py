"""The dashboard answers on this machine only: it reads the run store and has no authentication.

``workbench app`` and ``app.serve`` bind it to 127.0.0.1, and so does .streamlit/config.toml, but that
file is read only from the working directory. So the app checks at every page render
(:func:`exposure`): when the server it runs in listens beyond the loopback interface, or the browser
connects from another machine, the page says how to start it safely and shows nothing else. Set
``WORKBENCH_APP_PUBLIC=1`` to serve it anyway (behind your own authentication).
"""

from __future__ import annotations

import ipaddress
import os

#: The address every launcher of the dashboard binds to.
ADDRESS = "127.0.0.1"
PUBLIC_ENV = "WORKBENCH_APP_PUBLIC"


def is_loopback(address: str | None) -> bool:
    """Whether a bind address or client address is this machine only (None and "" mean every interface)."""
    if not address:
        return False
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure(server_address: str | None, client_ip: object, public: bool) -> str | None:
    """Why this page must not be shown, or None when it may.

    Args:
        server_address: Streamlit's ``server.address`` (None or "": every interface).
        client_ip: ``st.context.ip_address`` (None for a loopback client; anything not a str is ignored).
        public: The ``WORKBENCH_APP_PUBLIC`` opt-out.
    """
    if public:
        return None
    if not is_loopback(server_address):
        where = f"address {server_address}" if server_address else "every network interface"
        return f"The dashboard server listens on {where}, not on this machine only."
    if isinstance(client_ip, str) and not is_loopback(client_ip):
        return f"This page was requested from {client_ip}, another machine."
    return None


def check_page() -> None:
    """Stop the page (with an explanation) when a real server exposes it beyond this machine."""
    import streamlit as st
    from streamlit import runtime

    try:
        real = isinstance(runtime.get_instance(), runtime.Runtime)
    except RuntimeError:  # no runtime: a bare script run, nothing is served
        real = False
    if not real:  # AppTest and bare runs serve nothing
        return
    reason = exposure(
        st.get_option("server.address"), st.context.ip_address, os.environ.get(PUBLIC_ENV) == "1"
    )
    if reason is not None:
        st.error(
            f"{reason} The dashboard reads the run store and has no authentication, so it only answers "
            f"on {ADDRESS}. Start it with `workbench app`, or `streamlit run app/streamlit_app.py "
            f"--server.address {ADDRESS}`; set {PUBLIC_ENV}=1 to serve it anyway."
        )
        st.stop()
