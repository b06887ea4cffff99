from setuptools import find_packages, setup

setup(
    name="toutiao-gateway",
    version="0.1.0",
    description="Authentication gateway and reverse proxy for the toutiao token scheme",
    packages=find_packages(include=["gateway", "gateway.*", "upstream_stub", "upstream_stub.*"]),
    package_data={"gateway.endpoints": ["openapi.yaml"],  # docs/openapi.yaml, served at /_gateway/openapi.json
                  "upstream_stub.demo": ["index.html", "demo.js"]},
    python_requires=">=3.11",
    install_requires=[
        "aiohttp>=3.11",
        "httptools>=0.6",
        "PyJWT[crypto]>=2.9",
        "cryptography>=42",  # certificate dates for the TLS expiry warning
        "redis>=5.0",
        "aiomysql>=0.2",
        "PyMySQL>=1.1",
        "aiosqlite>=0.20",
        "PyYAML>=6.0",
        "argon2-cffi>=23.1",
        "limits>=4.2",
        "prometheus-client>=0.21",  # the text format of /metrics
        "uvloop>=0.19; sys_platform != 'win32'",
    ],
    extras_require={
        "test": ["pytest>=8.0", "pytest-aiohttp>=1.0", "pytest-asyncio>=0.23", "mypy>=1.10", "ruff>=0.5",
                 "types-PyYAML", "schemathesis>=4.0", "hypothesis>=6.100", "requests>=2.31", "selenium>=4.20"],
        "bench": ["matplotlib>=3.8", "Flask>=3.0", "Flask-RESTful>=0.3.10", "Flask-SQLAlchemy>=3.1",
                  "gunicorn>=22.0"],
    },
    entry_points={"console_scripts": ["toutiao-gateway=gateway.cli.main:main"]},
)
