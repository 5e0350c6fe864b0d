"""The aiohttp Kubernetes client against the HTTPS test API server (tests/peers/kubeapi.py)."""

import asyncio
import json
import logging
import os
import shutil

import pytest
from prometheus_client import CollectorRegistry

from edgeagent.kube.client import CredentialCache, KubeClient, KubeMetrics, parse_retry_after
from edgeagent.kube.credentials import load_kubeconfig
from edgeagent.kube.errors import KubeError, KubeNetworkError, KubeResponseError, KubeTLSError
from tests.peers.kubeapi import KubeApiServer
from tests.tools import arun


def client_for(path, timeout=5.0, registry=None):
    return KubeClient(CredentialCache(lambda: load_kubeconfig(path)), timeout=timeout,
                      metrics=KubeMetrics(registry) if registry is not None else None)


@pytest.mark.parametrize("auth,ca", [("cert", "file"), ("cert-data", "data"), ("token", "file"),
                                     ("token-file", "data")])
def test_authenticates_and_reads_its_node(tmp_path, auth, ca):
    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            registry = CollectorRegistry()
            async with client_for(api.write_kubeconfig(auth=auth, ca=ca),
                                  registry=registry) as client:
                node = await client.get_node("jetson-1")
            assert node["metadata"]["name"] == "jetson-1"
            assert api.records[-1].user == "system:node:jetson-1"
            assert registry.get_sample_value("edgeagent_kube_requests_total",
                                             {"method": "GET", "code": "200"}) == 1

    arun(scenario())


def test_merge_patch_precondition_and_null_deletes(tmp_path):
    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            api.edit_node("jetson-1", {"metadata": {"labels": {"old.io/x": "1"}}})
            async with client_for(api.write_kubeconfig()) as client:
                node = await client.get_node("jetson-1")
                rv = node["metadata"]["resourceVersion"]
                out = await client.patch_node("jetson-1", {"metadata": {
                    "resourceVersion": rv, "labels": {"old.io/x": None, "new.io/y": "2"}}})
                assert out["metadata"]["labels"]["new.io/y"] == "2"
                assert "old.io/x" not in api.labels("jetson-1")
                assert out["metadata"]["resourceVersion"] != rv
                with pytest.raises(KubeError) as e:   # the old resourceVersion: conflict
                    await client.patch_node("jetson-1", {"metadata": {
                        "resourceVersion": rv, "labels": {"z.io/z": "3"}}})
                assert e.value.status == 409 and e.value.reason == "Conflict"
                assert "z.io/z" not in api.labels("jetson-1")

    arun(scenario())


@pytest.mark.parametrize("auth", ["cert", "token"])
def test_node_authorizer_and_node_restriction_own_node_only(tmp_path, auth):
    async def scenario():
        async with KubeApiServer(str(tmp_path), nodes=["jetson-1", "jetson-2"]) as api:
            async with client_for(api.write_kubeconfig(auth=auth)) as client:
                # Kubernetes 1.32+: a node may read only its own Node, with this message.
                with pytest.raises(KubeError) as e:
                    await client.get_node("jetson-2")
                assert e.value.status == 403 and e.value.reason == "Forbidden"
                assert str(e.value).endswith(
                    'nodes "jetson-2" is forbidden: User "system:node:jetson-1" cannot get '
                    'resource "nodes" in API group "" at the cluster scope: node \'jetson-1\' '
                    "cannot read 'jetson-2', only its own Node object")
                own = await client.request("GET", "/api/v1/nodes?fieldSelector=metadata.name%3D"
                                           "jetson-1")
                assert [n["metadata"]["name"] for n in own.body["items"]] == ["jetson-1"]
                with pytest.raises(KubeError) as e:
                    await client.request("GET", "/api/v1/nodes")
                assert e.value.status == 403
                assert await client.can_i("get", "nodes", "jetson-2") == (False, (
                    'User "system:node:jetson-1" cannot get resource "nodes" in API group "" at '
                    "the cluster scope: node 'jetson-1' cannot read 'jetson-2', only its own "
                    "Node object"))
                with pytest.raises(KubeError) as e:
                    await client.patch_node("jetson-2", {"metadata": {"labels": {"a.io/b": "c"}}})
                assert e.value.status == 403
                with pytest.raises(KubeError) as e:
                    await client.patch_node("jetson-1", {"metadata": {"labels": {
                        "kubernetes.io/role": "gpu"}}})
                assert e.value.status == 403
                assert await client.can_i("patch", "nodes", "jetson-1") == (True, "")
                allowed, reason = await client.can_i("patch", "nodes", "jetson-2")
                assert not allowed and "jetson-2" in reason
                with pytest.raises(KubeError) as e:
                    await client.get_node("nope")       # not its own: whether or not it exists
                assert e.value.status == 403
                del api.nodes["jetson-1"]               # its own, not registered (yet)
                with pytest.raises(KubeError) as e:
                    await client.get_node("jetson-1")
                assert e.value.status == 404

    arun(scenario())


def test_anonymous_and_wrong_ca_and_server_name(tmp_path):
    async def scenario():
        async with KubeApiServer(str(tmp_path / "a")) as api, \
                KubeApiServer(str(tmp_path / "b")) as other:
            async with client_for(api.write_kubeconfig(auth="none")) as client:
                assert (await client.version()).status == 200   # /version is public
                with pytest.raises(KubeError) as e:
                    await client.get_node("jetson-1")
                assert e.value.status == 403
            # A kubeconfig trusting another cluster's CA: TLS must fail.
            path = api.write_kubeconfig()
            text = open(path).read().replace(api.ca_path, other.ca_path)
            open(path, "w").write(text)
            async with client_for(path) as client:
                with pytest.raises(KubeTLSError):
                    await client.get_node("jetson-1")
            # tls-server-name decides which name the certificate must carry.
            import json

            for name, ok in (("localhost", True), ("wrong.example", False)):
                doc = json.load(open(api.write_kubeconfig()))
                doc["clusters"][0]["cluster"]["tls-server-name"] = name
                p = str(tmp_path / ("sni-" + name))
                json.dump(doc, open(p, "w"))
                async with client_for(p) as client:
                    if ok:
                        await client.get_node("jetson-1")
                    else:
                        with pytest.raises(KubeTLSError):
                            await client.get_node("jetson-1")

    arun(scenario())


def test_insecure_skip_tls_verify_works_with_a_loud_warning(tmp_path, caplog):
    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            async with client_for(api.write_kubeconfig(auth="token", ca="insecure")) as client:
                await client.get_node("jetson-1")

    with caplog.at_level(logging.WARNING):
        arun(scenario())
    assert any("INSECURE" in r.getMessage() for r in caplog.records)


def test_rotated_certificate_is_picked_up_from_disk(tmp_path):
    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            path = api.write_kubeconfig()
            creds = load_kubeconfig(path)
            client = client_for(path)
            async with client:
                await client.get_node("jetson-1")
                # The kubelet rotates: new certificate files, the old certificate is revoked.
                api.revoke_cert_file(creds.cert_file)
                fresh = api.write_kubeconfig(path=str(tmp_path / "fresh"))
                new = load_kubeconfig(fresh)
                shutil.copy(new.cert_file, creds.cert_file + ".new")
                shutil.copy(new.key_file, creds.key_file + ".new")
                os.replace(creds.key_file + ".new", creds.key_file)
                os.replace(creds.cert_file + ".new", creds.cert_file)
                await client.get_node("jetson-1")
                assert client.credentials.loads == 2
                assert [r.status for r in api.records] == [200, 200]

    arun(scenario())


def test_401_reads_credentials_again_and_retries_once(tmp_path):
    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            async with client_for(api.write_kubeconfig()) as client:
                api.inject(401, count=1)
                await client.get_node("jetson-1")
                assert client.credentials.loads == 2
                api.inject(401, count=2)
                with pytest.raises(KubeError) as e:
                    await client.get_node("jetson-1")
                assert e.value.status == 401

    arun(scenario())


def test_failures_are_classified(tmp_path):
    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            path = api.write_kubeconfig()
            registry = CollectorRegistry()
            async with client_for(path, timeout=0.5, registry=registry) as client:
                api.inject(429, retry_after=7)
                with pytest.raises(KubeError) as e:
                    await client.get_node("jetson-1")
                assert (e.value.status, e.value.retry_after, e.value.retryable) == (429, 7.0, True)
                api.inject(500)
                with pytest.raises(KubeError) as e:
                    await client.get_node("jetson-1")
                assert e.value.status == 500 and e.value.retryable
                # aiohttp itself retries an idempotent request once when a kept-alive
                # connection drops, so drop it three times.
                api.inject(drop=True, count=3)
                with pytest.raises(KubeNetworkError):
                    await client.get_node("jetson-1")
                api.faults.clear()
                api.inject(delay=2.0)
                with pytest.raises(KubeNetworkError, match="no answer within"):
                    await client.get_node("jetson-1")
                await client.get_node("jetson-1")       # and it recovers
                assert registry.get_sample_value("edgeagent_kube_requests_total",
                                                 {"method": "GET", "code": "error"}) == 2
        # The server is gone: connection refused is a network error too.
        async with client_for(path, timeout=1.0) as client:
            with pytest.raises(KubeNetworkError):
                await client.get_node("jetson-1")

    arun(scenario())


def test_retry_after_forms():
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("\u0661\u0662") is None      # Arabic-Indic digits are not ASCII


# --- bodies as a real API server sends them ----------------------------------------------------

def test_a_realistic_node_arrives_in_pieces_and_is_read_whole(tmp_path):
    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            async with client_for(api.write_kubeconfig()) as client:
                resp = await client.request("GET", "/api/v1/nodes/jetson-1")
                assert resp.headers.get("Transfer-Encoding") == "chunked"
                assert len(json.dumps(resp.body)) > 5 * 1024
                node = await client.get_node("jetson-1")
                assert node["metadata"]["managedFields"] and node["status"]["images"]
                assert node["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.32")

    arun(scenario())


def test_the_old_single_read_gets_only_part_of_the_node(tmp_path):
    """The client code before issue 11 read bodies with one ``resp.content.read(n)``: against
    a server that streams the Node in pieces it gets the first piece only, which parsed as
    nothing. This is that code, run against the test API server."""
    import aiohttp

    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            api.piece_pause = 0.05
            path = api.write_kubeconfig(auth="token")
            cache = CredentialCache(lambda: load_kubeconfig(path))
            cache.reload()
            async with aiohttp.ClientSession() as session:
                async with session.get(api.url + "/api/v1/nodes/jetson-1", ssl=cache.ssl,
                                       headers={"Authorization": "Bearer " + cache.token}) as r:
                    raw = await r.content.read(4 << 20)
                    rest = await r.content.read()
            whole = raw + rest
            assert len(json.loads(whole)["metadata"]["managedFields"]) == 3
            assert len(raw) <= api.piece_bytes < len(whole)
            with pytest.raises(ValueError):
                json.loads(raw)

    arun(scenario())


def test_body_cap_is_counted_not_a_single_read(tmp_path, monkeypatch):
    import edgeagent.kube.client as client_module

    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            async with client_for(api.write_kubeconfig()) as client:
                monkeypatch.setattr(client_module, "MAX_BODY", 3000)  # the Node is > 5 KiB
                with pytest.raises(KubeResponseError, match="larger than 3000 bytes"):
                    await client.get_node("jetson-1")
                monkeypatch.setattr(client_module, "MAX_BODY", 1 << 20)
                assert (await client.get_node("jetson-1"))["metadata"]["name"] == "jetson-1"

    arun(scenario())


@pytest.mark.parametrize("body", ["", "{not json", "[1, 2]", '{"kind": "Status"}',
                                  '{"metadata": "x"}', "[" * 100000,
                                  # an int64 has 19 digits; int() of many is quadratic
                                  '{"metadata": {"generation": %s}}' % ("9" * 4000)],
                         ids=["empty", "not-json", "list", "status", "no-metadata", "deep",
                              "huge-int"])
def test_a_success_that_is_not_a_node_stops_the_caller(tmp_path, body):
    async def scenario():
        async with KubeApiServer(str(tmp_path)) as api:
            async with client_for(api.write_kubeconfig()) as client:
                api.inject(200, body=body, method="GET")
                with pytest.raises(KubeResponseError):
                    await client.get_node("jetson-1")
                api.inject(200, body=body, method="PATCH")
                with pytest.raises(KubeResponseError):
                    await client.patch_node("jetson-1", {"metadata": {"labels": {"a.io/b": "c"}}})

    arun(scenario())


def test_read_body_counts_every_piece():
    from edgeagent.kube.client import BodyTooLarge, read_body

    async def scenario():
        loop = asyncio.get_event_loop()

        def stream(pieces):
            reader = aiohttp_stream(loop)
            for piece in pieces:
                reader.feed_data(piece)
            reader.feed_eof()
            return reader

        assert await read_body(stream([b"ab", b"cd", b"e"]), 5) == b"abcde"
        with pytest.raises(BodyTooLarge):
            await read_body(stream([b"ab", b"cd", b"ef"]), 5)
        assert await read_body(stream([]), 5) == b""

    arun(scenario())


def aiohttp_stream(loop):
    import aiohttp
    from unittest import mock

    protocol = mock.Mock(_reading_paused=False)
    return aiohttp.StreamReader(protocol, 2 ** 16, loop=loop)


def test_a_bearer_token_over_plain_http_warns_on_every_start(tmp_path, caplog):
    async def scenario():
        async with KubeApiServer(str(tmp_path), tls=False) as api:
            path = api.write_kubeconfig(auth="token", ca="none")
            for _ in range(2):   # two starts: two warnings; requests in between: none
                async with client_for(path) as client:
                    await client.get_node("jetson-1")
                    await client.get_node("jetson-1")

    with caplog.at_level(logging.WARNING, logger="edgeagent.kube.client"):
        arun(scenario())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "clear text" in warnings[0] and "http://127.0.0.1" in warnings[0]
