"""Where triggers deferred before the move to :mod:`leadflow.messaging` are stored (classpath)."""

from leadflow.messaging.trigger import FollowupsSqsTrigger

__all__ = ["FollowupsSqsTrigger"]
