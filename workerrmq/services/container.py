"""Every service of one process, built from its settings: what the API serves through."""

from __future__ import annotations

import dataclasses
import sys

from workerrmq.broker.management import ManagementClient
from workerrmq.broker.publisher import Publisher
from workerrmq.services.attempts import AttemptService
from workerrmq.services.connections import ConnectionService
from workerrmq.services.consumers import ConsumerService
from workerrmq.services.messages import MessageService
from workerrmq.services.queues import QueueService
from workerrmq.settings import Settings
from workerrmq.store import Database
from workerrmq.store.attempts import AttemptStore
from workerrmq.store.consumers import ConsumerStore
from workerrmq.store.crypto import Cipher
from workerrmq.store.keys import KeyStore
from workerrmq.store.workers import WorkerRegistry

__all__ = ["Services"]


@dataclasses.dataclass
class Services:
    """The services, stores and broker clients of one process, sharing its connections."""

    settings: Settings
    db: Database
    keys: KeyStore
    management: ManagementClient
    publisher: Publisher
    queues: QueueService
    messages: MessageService
    connections: ConnectionService
    consumers: ConsumerService
    workers: WorkerRegistry
    attempts: AttemptService

    @classmethod
    def build(cls, settings: Settings) -> Services:
        db = Database(settings.database_url)
        management = ManagementClient(
            settings.rabbitmq_management_url,
            settings.vhost,
            timeout=settings.broker_timeout,
            ca_file=settings.rabbitmq_management_ca_file,
        )
        publisher = Publisher(settings.rabbitmq_urls, timeout=settings.broker_timeout)
        queues = QueueService(management, publisher.queue_counts)
        consumer_store = ConsumerStore(db, Cipher.from_settings(settings))
        return cls(
            settings=settings,
            db=db,
            keys=KeyStore(db),
            management=management,
            publisher=publisher,
            queues=queues,
            messages=MessageService(publisher, max_batch=settings.max_batch),
            connections=ConnectionService(management),
            consumers=ConsumerService(
                consumer_store,
                queues,
                management,
                publisher,
                default_target_url=settings.default_target_url,
                block_private_targets=settings.block_private_targets,
            ),
            workers=WorkerRegistry(db),
            attempts=AttemptService(AttemptStore(db), consumer_store),
        )

    def prepare(self) -> None:
        """Run once at start: migrate the database, refuse a wrong ``SECRET_KEY``
        (:class:`~workerrmq.errors.ConfigError`), encrypt credentials still stored in
        plaintext, and create the first admin key, printing its token this once."""
        self.db.migrate()
        self.consumers.store.prepare()
        token = self.keys.bootstrap(self.settings.bootstrap_api_key)
        if token:
            # Printed, not logged: the token must not reach log storage.
            print(
                f"\nWorkerRMQ created an admin API key; it is shown only this once:\n\n    {token}\n\n"
                "Send it as 'Authorization: Bearer <key>'. Create more with 'workerrmq keys create'.\n",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        self.publisher.close()
        self.db.dispose()
