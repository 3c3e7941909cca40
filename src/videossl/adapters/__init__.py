"""Encoders from elsewhere behind the `videossl evaluate --encoder` contract (videossl.eval.external)."""
