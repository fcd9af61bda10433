"""The gateway (AWS IoT Core's role): brokers and the MQTT client that receives device messages."""
