import type { RingcastError } from './errors.js';
import type {
  GapInfo,
  Json,
  Member,
  MessageHandler,
  Position,
  RecoveryFailedInfo,
  SubscribedInfo,
} from './types.js';

/** Options of {@link RingcastClient.subscribe}. Every callback is optional. */
export interface SubscribeOptions {
  /**
   * Resume from this position on the first subscribe (for example one persisted by the app).
   * Ignored when the client already tracks a position for the room.
   */
  since?: Position;
  /**
   * Track who is in the room (WebSocket only, needs `presence = true` in the namespace): after
   * every (re)subscribe the client asks `presence`, then applies `join`/`leave`; see
   * {@link Subscription.members} and `onPresence`.
   */
  presence?: boolean;
  /** Every time the server confirms the subscription (first subscribe and every resume). */
  onSubscribed?: (info: SubscribedInfo) => void;
  /** A resume could not recover what was missed (`recovered: false`): refetch the room's state. */
  onRecoveryFailed?: (info: RecoveryFailedInfo) => void;
  /** Messages were skipped (a `gap` event, or an offset jump the SDK noticed). */
  onGap?: (info: GapInfo) => void;
  /** Ephemeral events of other clients (`event`, §10.6). */
  onEvent?: (data: Json, room: string) => void;
  onJoin?: (member: Member) => void;
  onLeave?: (member: Member) => void;
  /** The member list changed (with `presence: true`). */
  onPresence?: (members: Member[]) => void;
  /** The subscription failed for good (`forbidden`, `bad_room`, …) or an `event` was refused. */
  onError?: (err: RingcastError) => void;
  /** The server removed the subscription (`unsubscribed` with a reason, e.g. `forbidden`). */
  onUnsubscribed?: (reason: string | undefined) => void;
}

/** @internal The client's side of a subscription; the client drives it. */
export interface SubscriptionOwner {
  _unsubscribe(sub: Subscription): Promise<void>;
  _members(room: string): Member[] | undefined;
  position(room: string): Position | undefined;
}

/** A subscription to one room, returned by {@link RingcastClient.subscribe}. */
export class Subscription {
  /** Resolves on the first `subscribed`; rejects if the subscription fails or is cancelled first. */
  readonly ready: Promise<SubscribedInfo>;
  private _active = true;
  private _settled = false;
  private _resolve!: (info: SubscribedInfo) => void;
  private _reject!: (err: RingcastError) => void;

  /** @internal */
  constructor(
    private readonly owner: SubscriptionOwner,
    readonly room: string,
    /** @internal */ readonly handler: MessageHandler,
    /** @internal */ readonly options: SubscribeOptions,
  ) {
    this.ready = new Promise<SubscribedInfo>((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    // Nobody has to await `ready`: never an unhandled rejection.
    this.ready.catch(() => {});
  }

  /** False once unsubscribed, removed by the server, or failed. */
  get active(): boolean {
    return this._active;
  }

  /** The last position processed in the room (what a resume starts from). */
  get position(): Position | undefined {
    return this.owner.position(this.room);
  }

  /** Current members (with `presence: true`, once known). */
  get members(): Member[] | undefined {
    return this.owner._members(this.room);
  }

  /** Leaves the room (the server subscription ends when its last local subscription does). */
  unsubscribe(): Promise<void> {
    return this.owner._unsubscribe(this);
  }

  /** @internal */
  _settle(info: SubscribedInfo | undefined, err?: RingcastError): void {
    if (this._settled) return;
    this._settled = true;
    if (info) this._resolve(info);
    else if (err) this._reject(err);
  }

  /** @internal */
  _deactivate(): void {
    this._active = false;
  }
}
