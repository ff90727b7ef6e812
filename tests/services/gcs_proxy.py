"""A local HTTPS proxy that hands TensorFlow's Cloud Storage requests to the emulator (tests/services/gcs.py).

tf.io.gfile (under etils.epath, TensorBoard and TFDS) always calls https://www.googleapis.com and
https://storage.googleapis.com, but through libcurl, which honours `https_proxy` and `CURL_CA_BUNDLE`. This proxy
answers CONNECT for those two hosts only (anything else is refused: nothing leaves 127.0.0.1), terminates TLS with a
certificate the test made, and forwards each request over plain HTTP to the emulator. Two differences of the emulator
are bridged here: it answers TF's `Transfer-Encoding: identity` on empty uploads with 501 (the body is forwarded with a
Content-Length instead); it names a resumable upload's session `http://` (the Location is made https, so the
upload's next request comes back through the proxy); and it lacks the bucket's `storageLayout`, which TF asks before
renaming a folder (answered here as Cloud Storage answers for a bucket without hierarchical namespace).
"""
import http.client
import http.server
import json
import re
import socketserver
import ssl
import threading

GOOGLE_HOSTS = ('www.googleapis.com', 'storage.googleapis.com')
_HOP_HEADERS = ('transfer-encoding', 'connection', 'proxy-connection', 'keep-alive', 'expect', 'content-length')


def _read_body(handler: http.server.BaseHTTPRequestHandler) -> bytes:
  """The request's body, chunked or of Content-Length bytes."""
  if 'chunked' in handler.headers.get('Transfer-Encoding', '').lower():
    body = b''
    while True:
      size = int(handler.rfile.readline().split(b';')[0], 16)
      if not size:
        while handler.rfile.readline() not in (b'\r\n', b'\n', b''):
          pass
        return body
      body += handler.rfile.read(size)
      handler.rfile.readline()
  length = int(handler.headers.get('Content-Length') or 0)
  return handler.rfile.read(length) if length else b''


def _forwarder(upstream_port: int):
  """The handler of the requests inside one tunnel: each forwarded to 127.0.0.1:upstream_port, Host kept."""

  class Forward(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
      pass

    def forward(self):
      body = _read_body(self)
      layout = re.fullmatch(r'/storage/v1/b/([^/?]+)/storageLayout(\?.*)?', self.path)
      if layout and self.command == 'GET':
        data = json.dumps({'kind': 'storage#storageLayout', 'bucket': layout.group(1), 'location': 'US-CENTRAL1',
                           'locationType': 'region'}).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return
      headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
      upstream = http.client.HTTPConnection('127.0.0.1', upstream_port, timeout=300)
      try:
        upstream.request(self.command, self.path, body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
      finally:
        upstream.close()
      self.send_response(response.status, response.reason)
      for key, value in response.getheaders():
        if key.lower() in _HOP_HEADERS:
          continue
        if key.lower() == 'location' and value.startswith('http://'):
          value = 'https://' + value[len('http://'):]
        self.send_header(key, value)
      is_head = self.command == 'HEAD'
      self.send_header('Content-Length', response.getheader('Content-Length', '0') if is_head else str(len(data)))
      self.end_headers()
      if not is_head:
        self.wfile.write(data)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = forward

  return Forward


class Proxy(socketserver.ThreadingTCPServer):
  """`with Proxy(upstream_port, certfile, keyfile) as proxy:` serves on 127.0.0.1:proxy.port in a thread."""

  daemon_threads = True

  def __init__(self, upstream_port: int, certfile: str, keyfile: str):
    self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    self.tls.load_cert_chain(certfile, keyfile)
    self.forward = _forwarder(upstream_port)
    super().__init__(('127.0.0.1', 0), _Tunnel)
    self.port = self.server_address[1]
    self._thread = threading.Thread(target=self.serve_forever, daemon=True)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self.shutdown()
    self.server_close()


class _Tunnel(socketserver.StreamRequestHandler):
  """One CONNECT: refused unless to a Google storage host; else TLS ends here and the requests inside are forwarded."""

  def handle(self):
    request = self.rfile.readline().decode('latin-1').split()
    while self.rfile.readline() not in (b'\r\n', b'\n', b''):
      pass
    if len(request) < 2 or request[0] != 'CONNECT' or request[1].rsplit(':', 1)[0] not in GOOGLE_HOSTS:
      self.wfile.write(b'HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
      return
    self.wfile.write(b'HTTP/1.1 200 Connection established\r\n\r\n')
    self.wfile.flush()
    try:
      tunnel = self.server.tls.wrap_socket(self.connection, server_side=True)
    except (ssl.SSLError, OSError):
      return
    self.server.forward(tunnel, self.client_address, self.server)
