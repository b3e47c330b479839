"""The texts of the seed's routes (its ResponseMessages and ResponseError), in one place."""

__all__ = ["ResponseMessages", "ResponseError"]


class ResponseMessages:
    QUEUE_CREATED = "Queue has been created successfully."
    QUEUE_DELETED = "Queue has been deleted successfully."
    MESSAGE_PUBLISHED = "Message has been published successfully."
    CONSUMER_CREATED = "Consumer has been created successfully."
    CONSUMER_DELETED = "Consumer has been deleted successfully."


class ResponseError:
    QUEUE_NAME_REQUIRED = "queueName is required."
    MESSAGE_REQUIRED = "message is required."
    QUEUE_NOT_FOUND = "Queue not found."
    CONSUMER_NOT_FOUND = "Consumer not found."
