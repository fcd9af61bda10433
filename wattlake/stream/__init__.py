"""The delivery stream (Firehose's role): buffer readings and deliver them to the lake."""
