"""Server components of the job: the FedAvg workflow for large models, the pretrained-model persistor, and the
exchange machinery they use (shared download, in-place mean).

The job ships this package to the server only (app_server/custom); the sites never receive it.
"""
