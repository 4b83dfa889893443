"""Serving qformer's models on an engine built for many clients and many machines (Ray Serve)."""
