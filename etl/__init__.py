"""Streaming ETL: Kafka (MSK) + Glue Schema Registry Avro -> Iceberg, with the IO at the edges."""
