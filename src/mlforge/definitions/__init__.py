"""What users declare: features, entities, sources, metrics, durations, validators.

Nothing here imports an engine; every object is frozen and validated when declared.
"""
