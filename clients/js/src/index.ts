export { RingcastClient, type ClientEvents } from './client.js';
export { Subscription, type SubscribeOptions } from './subscription.js';
export { RingcastError } from './errors.js';
export { backoffCeiling, backoffDelay, type BackoffParams } from './backoff.js';
export { SseParser, type SseMessage, type SseSink } from './sse-parser.js';
export { isValidRoom, ROOM_RE } from './util.js';
export type {
  BackoffOptions,
  ConnectionState,
  DisconnectInfo,
  GapInfo,
  HistoryMessage,
  HistoryResult,
  Json,
  Member,
  MessageContext,
  MessageHandler,
  OfflineQueueOptions,
  Position,
  PublishResult,
  RecoveryFailedInfo,
  RingcastOptions,
  ServerEvent,
  SubscribedInfo,
  TokenProvider,
  TransportName,
  WebSocketConstructor,
  WebSocketLike,
} from './types.js';
