"""REST gateway: FastAPI over the gRPC services, with API-key authentication."""
