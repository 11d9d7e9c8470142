"""The workbench dashboard (Streamlit): ``streamlit run app/streamlit_app.py`` or ``workbench app``."""
