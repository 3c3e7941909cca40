"""A real S3 listing with a key that escapes the download folder: that key is refused, the rest load."""
from __future__ import annotations

from tests.servers import S3Server
from videossl.data import sources


def test_an_s3_listing_with_an_escaping_key_rejects_that_key_only(s3_server: S3Server, tmp_path):
    s3_server.make_bucket("escape")
    client = s3_server.client()
    for key in ("videos/ok.mp4", "videos/../../outside.mp4"):
        client.put_object(Bucket="escape", Key=key, Body=b"not really a video")
    inputs, rejected = sources.expand_s3("s3://escape/videos/", s3_server.endpoint_url)
    assert [v.uri for v in inputs] == ["s3://escape/videos/ok.mp4"]
    assert len(rejected) == 1 and "unsafe s3 key" in rejected[0].reason and "outside.mp4" in rejected[0].reason
