"""``s3orchestrator import``: objects a store already holds become objects of a virtual bucket.

``areas`` says which store names are the daemon's own and which an import may take;
``s3_source`` and ``directory_source`` list what a store holds; ``runner`` records it
(``metadata.imports``) and reports the progress the admin API shows (``ops.import_api``).
"""
