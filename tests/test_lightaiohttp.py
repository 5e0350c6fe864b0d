"""aiohttp imported without reading the CA bundle until first use and without libstdc++
(edgeagent/lightaiohttp.py).

Each case runs in a fresh interpreter: in this one aiohttp is usually imported already, and then
import_aiohttp() rightly does nothing."""

import os
import subprocess
import sys
import textwrap

import pytest
import trustme

from tests.conftest import REPO


def _run(code: str, env=None) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO,
                          env=dict(os.environ, **(env or {})), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
    assert proc.returncode == 0, proc.stdout
    return proc.stdout


def test_aiohttp_contexts_load_the_same_certificates_on_first_use_only():
    out = _run("""
        import ssl
        from edgeagent.lightaiohttp import DeferredCertsContext, import_aiohttp

        import_aiohttp()
        from aiohttp import connector

        fresh_verified = ssl.create_default_context()
        for name in ("_SSL_CONTEXT_VERIFIED", "_SSL_CONTEXT_UNVERIFIED"):
            ctx = getattr(connector, name)
            assert type(ctx) is DeferredCertsContext and isinstance(ctx, ssl.SSLContext), name
            # the base method looks at the store without loading what is pending
            assert ssl.SSLContext.cert_store_stats(ctx)["x509"] == 0, name
        v = connector._SSL_CONTEXT_VERIFIED
        assert (v.verify_mode, v.check_hostname, v.options, v.minimum_version) == (
            fresh_verified.verify_mode, fresh_verified.check_hostname, fresh_verified.options,
            fresh_verified.minimum_version)
        want = fresh_verified.cert_store_stats()
        if not want["x509_ca"]:
            print("no CA bundle")
            raise SystemExit(0)
        assert v.cert_store_stats() == want
        assert connector._SSL_CONTEXT_UNVERIFIED.get_ca_certs() == fresh_verified.get_ca_certs()
        assert connector._SSL_CONTEXT_UNVERIFIED.verify_mode == ssl.CERT_NONE
        # ssl itself is as it was: a context made now loads at once
        later = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        later.load_default_certs()
        assert type(later) is ssl.SSLContext and later.cert_store_stats() == want
        assert "set_default_verify_paths" not in ssl.SSLContext.__dict__
        print("ok")
    """)
    if out.strip() == "no CA bundle":
        pytest.skip("this host has no system CA bundle (ca-certificates): nothing to defer")
    assert out.strip() == "ok"


def test_a_request_through_aiohttps_default_context_verifies_with_the_loaded_ca(tmp_path):
    """ssl=True (aiohttp's own verified context): the deferred load happens at the handshake,
    from SSL_CERT_FILE as OpenSSL reads it, and verification works both ways."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    chain = tmp_path / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(chain))
    code = """
        import asyncio, ssl, sys
        from edgeagent.lightaiohttp import import_aiohttp

        aiohttp = import_aiohttp()
        from aiohttp import web

        async def main():
            app = web.Application()
            app.router.add_get("/", lambda r: web.Response(text="hello"))
            runner = web.AppRunner(app)
            await runner.setup()
            server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_ctx.load_cert_chain(%r)
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]
            try:
                async with aiohttp.ClientSession() as s:
                    async with s.get("https://127.0.0.1:%%d/" %% port) as r:
                        print(await r.text())
            except aiohttp.ClientConnectorCertificateError:
                print("refused")
            finally:
                await runner.cleanup()

        asyncio.run(main())
    """ % str(chain)
    assert _run(code, {"SSL_CERT_FILE": str(ca_file)}).strip() == "hello"
    assert _run(code, {"SSL_CERT_FILE": os.devnull}).strip() == "refused"


def test_the_agents_aiohttp_users_import_it_through_lightaiohttp():
    out = _run("""
        import asyncio
        from edgeagent.metrics.server import MetricsServer
        from prometheus_client import CollectorRegistry

        async def serve():
            server = MetricsServer(CollectorRegistry(), "127.0.0.1", 0, lambda: (True, {}))
            await server.start()
            await server.stop()

        asyncio.run(serve())
        from aiohttp import connector
        print(type(connector._SSL_CONTEXT_VERIFIED).__name__)
    """)
    assert out.strip() == "DeferredCertsContext"


def test_frozenlist_is_the_pure_python_one_and_the_environment_is_restored():
    out = _run("""
        import os
        from edgeagent.lightaiohttp import import_aiohttp

        import_aiohttp()
        import aiosignal, frozenlist

        assert frozenlist.FrozenList.__module__ == "frozenlist", frozenlist.FrozenList.__module__
        assert "FROZENLIST_NO_EXTENSIONS" not in os.environ
        assert all("libstdc++" not in line for line in open("/proc/self/maps"))
        signal = aiosignal.Signal(owner=None)
        signal.append(print)
        signal.freeze()
        try:
            signal.append(print)
        except RuntimeError:
            print("frozen")
    """)
    assert out.strip() == "frozen"


def test_a_caller_s_own_frozenlist_setting_is_kept():
    out = _run("""
        import os
        from edgeagent.lightaiohttp import import_aiohttp

        import_aiohttp()
        print(os.environ["FROZENLIST_NO_EXTENSIONS"])
    """, {"FROZENLIST_NO_EXTENSIONS": "yes"})
    assert out.strip() == "yes"
