"""Operations shared by the REST API (``/api/v1``) and the seed's routes."""
