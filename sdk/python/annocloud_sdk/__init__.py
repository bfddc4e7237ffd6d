"""Python SDK for the annocloud REST API."""

from annocloud_sdk.client import Client
from annocloud_sdk.errors import ApiError

__all__ = ["ApiError", "Client"]
