"""The texts of the seed's routes (its ResponseMessages and ResponseError), in one place."""

__all__ = ["ResponseMessages", "ResponseError"]


class ResponseMessages:
    QUEUE_CREATED = "Queue has been created successfully."
    QUEUE_DELETED = "Queue has been deleted successfully."
    MESSAGE_PUBLISHED = "Message has been published successfully."
    CONSUMER_CREATED = "Consumer has been created successfully."
    CONSUMER_DELETED = "Consumer has been deleted successfully."


class ResponseError:
    CONSUMER_NOT_FOUND = "Consumer not found."
