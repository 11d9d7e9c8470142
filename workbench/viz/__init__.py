"""Plotly figures shared by the notebooks and the dashboard.

They take data and return figures; they never train.
"""
