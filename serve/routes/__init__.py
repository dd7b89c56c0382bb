"""The API's endpoints, one router per concern; serve/api.py's `create_app` assembles them."""
