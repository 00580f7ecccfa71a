/**
 * Packet shapes as the codec produces and consumes them. The core uses these types
 * and never imports mqtt-packet itself: this folder is the only place that does.
 */
export type {
  IAuthPacket as AuthPacket,
  IConnackPacket as ConnackPacket,
  IConnectPacket as ConnectPacket,
  IDisconnectPacket as DisconnectPacket,
  IPubackPacket as PubackPacket,
  IPubcompPacket as PubcompPacket,
  IPublishPacket as PublishPacket,
  IPubrecPacket as PubrecPacket,
  IPubrelPacket as PubrelPacket,
  ISubackPacket as SubackPacket,
  ISubscribePacket as SubscribePacket,
  ISubscription as Subscription,
  IUnsubackPacket as UnsubackPacket,
  IUnsubscribePacket as UnsubscribePacket,
  Packet,
  UserProperties,
} from "mqtt-packet";

/** 3 = MQTT 3.1 (MQIsdp), 4 = MQTT 3.1.1, 5 = MQTT 5.0 */
export type ProtocolVersion = 3 | 4 | 5;
