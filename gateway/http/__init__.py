"""The gateway's HTTP/1.1 server: requests parsed by llhttp (httptools), answers written in one write.

aiohttp's server costs more per request than the whole of a proxied exchange
does here (docs/PERFORMANCE.md): the public listener is this small server,
and aiohttp stays for everything that is a client (health checks, tests).
"""
