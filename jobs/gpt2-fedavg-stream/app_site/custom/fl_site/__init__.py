"""Code that runs at a site: the FL client, its training configuration, the data shards, the standalone trainer.

The job ships this package to the sites only (app_site/custom); the server never receives it.
"""
