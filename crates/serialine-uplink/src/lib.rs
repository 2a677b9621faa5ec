//! MQTT uplink.
