"""Credentials in URLs: the one place that knows what they look like, to refuse them in params and to
redact them wherever a URL is shown (logged params, error messages).

A URL carries a secret in its user-info (`user:password@host`) or in a query parameter (`?token=`,
a signed URL's `X-Amz-Signature=`). Passwords with '@' or a raw '/' (which RFC 3986 forbids and people
write anyway) are covered: everything up to the last '@' of a `user:...` part counts as user-info,
unless what follows the ':' is a port (`host:5000/path@x`). A numeric password with a raw '/' cannot
be told from a port; it stays unredacted.
"""
from __future__ import annotations

import re

_SECRET_NAMES = r"(?:[a-z_-]*token|password|passwd|pwd|secret|api[_-]?key|key|sig|signature|credential|x-amz-[a-z-]+|sas)"
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/@:]*:(?!\d+/)[^\s]*@|[^\s/@]*@)")
_SECRET_QUERY = re.compile(rf"(?:^|[&;]){_SECRET_NAMES}=", re.IGNORECASE)
_SECRET_VALUE = re.compile(rf"(?P<name>[?&;]{_SECRET_NAMES}=)[^&;\s]*", re.IGNORECASE)


def credentials_in(value: str) -> str | None:
    """What secret a URL carries (its user-info, or a secret query parameter), or None."""
    from urllib.parse import urlsplit

    if "://" not in value:
        return None
    if _USERINFO.match(value.strip()):
        return "a user name or password before '@'"
    if _SECRET_QUERY.search(urlsplit(value).query):
        return "a token, key or signature in its query"
    return None


def redact(text: str) -> str:
    """Every URL's user-info replaced by '***@' and secret query values by '***': what a log may show."""
    return _SECRET_VALUE.sub(lambda m: m.group("name") + "***",
                             _USERINFO.sub(lambda m: m.group("scheme") + "***@", text))
