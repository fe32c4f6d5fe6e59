"""Push events from registries (ACR webhooks, Event Grid, CloudEvents, OCI notifications)
wake the policies that follow the pushed image. No kopf here: the wiring starts the
receiver and hands it ``Controller.wake_for_image``."""

from imagedrift.events.payloads import Delivery, MalformedDelivery, parse_delivery
from imagedrift.events.server import MAX_BODY, Receiver, start_receiver

__all__ = [
    "MAX_BODY",
    "Delivery",
    "MalformedDelivery",
    "Receiver",
    "parse_delivery",
    "start_receiver",
]
