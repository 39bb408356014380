"""Code both sides of the federation run: loading the model, what of it is exchanged, and row blocks.

The job ships this package to the server (app_server/custom) and to every site (app_site/custom).
"""
