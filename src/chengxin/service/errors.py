"""Errors the service layer raises; interfaces map them to exit codes or HTTP statuses."""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error a use case reports to its caller."""

    code = "error"


class NotFound(ServiceError):
    """The subject, record, policy or measure does not exist (or may not be seen)."""

    code = "not_found"


class Invalid(ServiceError):
    """The request is malformed or breaks a rule."""

    code = "invalid"


class NotRegistered(ServiceError):
    """A principal asked for something it is not registered for (hard line 6)."""

    code = "not_registered"


class NoActivePolicy(ServiceError):
    """No policy has been activated yet."""

    code = "no_active_policy"
