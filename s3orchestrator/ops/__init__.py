"""What operators reach the daemon through besides S3: health and metrics endpoints,
the admin API, the telnet manhole, structured logs."""
