"""The results of a stored run as one HTML page: `wtb report` writes it to a file (every
script and style inlined, for a CI artifact), `wtb view` serves it with an index of runs.

`page` gathers what a page shows from the store (the matrix, the run case by case, per-node
figures, failure groups), `charts` turns it into Plotly figures, `html` renders the
templates (Jinja2, autoescaped: recorded outputs are untrusted text), `server` is the local
read-only viewer. Needs the `report` extra (Jinja2, and Plotly for its JavaScript).
"""
