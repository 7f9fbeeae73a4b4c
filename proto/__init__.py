"""The model gateway's protocol: ``model_gateway.proto`` and its generated modules.

Regenerate with ``python -m proto.generate`` after editing the .proto.
"""
