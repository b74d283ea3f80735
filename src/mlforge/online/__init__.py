"""Online stores: the newest row per entity of each feature, for low-latency serving.

Stores are imported from their modules (``mlforge.online.redis.RedisStore``...) or as
``mlf.RedisStore``; their clients are created lazily, so importing this package is cheap.
See :mod:`mlforge.online.base` for the protocol, the key layout and the value codec.
"""
