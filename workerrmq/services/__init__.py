"""What the API does, shared by ``/api/v1`` and the seed's routes, over the store and the broker."""
