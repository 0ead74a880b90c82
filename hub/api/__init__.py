"""HTTP edge: FastAPI routers, authentication and error translation."""
