#!/usr/bin/env python3
"""An independent checker of spec/history.md, written from the spec alone (not from oracle/).

Usage: history_check.py FILE [--latency-p99-ms N]
Prints one line per invariant and exits 0 (valid), 1 (a violation) or 2 (bad input).

Readings where the spec leaves room (one line each):
- Malformed line: not a JSON object, blank, or a field of the wrong type (ints must fit 64 bits).
- A receipt `kind` other than delivered/read is a malformed line.
- A device belongs to the first user named with it; a later other user is not bad input.
- Events after `end` are accepted; the last `end` decides quiescence and the run's end time.
- Without an `end` the run is not quiescent and ends at the last event's `t`.
- A device appears at the first line naming it (any event); it is owed only messages sent after.
- A conv is 1:1 when a send in it carries `to`; members: every sender and `to` of its sends.
- Otherwise a send without `to` or a join/leave makes it a group; with neither, kind unknown.
- In a conv of unknown kind (no send, no join/leave) membership is not judged.
- Group member at seq s: the user's join/leave with the highest seq below s is a join.
- Group membership uses every join/leave of the history, whenever it was written.
- Meant for devices: messages with a send, a known seq (first ack/deliver) and no reject.
- A repeated send of one msg id is ignored: the first send counts.
- no-phantom: the matching send must come earlier in the history than the deliver.
- A repeated deliver of (device, msg) is not judged by order or gap-free (only no-duplicate).
- order compares a deliver with the previous non-repeated deliver on (device, conv).
- Shown/expired (gap-free, receipts): the first deliver or expire line, compared by line.
- Meant for the reader: meant for at least one of the reader's devices.
- A message the reader sent counts as shown on the reader's side from its send line on.
- causal: seen before the send by line order; judged when m2's seq is known.
- sender-fifo compares consecutive acked sends of one (device, conv) by their first ack's seq.
- seq-agreement: (conv, seq) names a msg, a join of a user or a leave of a user.
- expiry: an expire with t <= expires_at + 1 s is in time; the run ends first if end.t <= that.
- view-once "right after": before the device's next deliver and within 1 s, unless the run ends.
- no-loss counts an `expire` of the message on the device as reaching it.
- no-loss has no exemption for a disappearing message past expires_at (spec has none).
- decrypt "current member": 1:1 always; group: the sender's last join/leave written before.
- decrypt without a send for the msg (sender unknown) is not judged.
- latency: a device is offline until its first `online`.
- latency: measured when both devices stayed online and no fault/heal occurred, send to deliver.
- latency percentiles are nearest-rank over first delivers.
- Counts: no-loss per (msg, device), gap-free per deliver, delivered receipts per receipt.
"""

import bisect
import json
import math
import sys

INVARIANTS = [
    "no-loss", "no-duplicate", "no-phantom", "order", "gap-free", "seq-agreement",
    "sender-fifo", "causal", "receipts", "membership", "expiry", "no-rejected-delivery",
    "decrypt", "latency",
]

STR, INT, BOOL = "str", "int", "bool"
KIND_NAMES = {STR: "string", INT: "64-bit integer", BOOL: "boolean"}

# type -> required fields (besides `type` and `t`) and their kinds.
REQUIRED = {
    "send": {"user": STR, "device": STR, "conv": STR, "msg": STR, "body": STR},
    "ack": {"device": STR, "conv": STR, "msg": STR, "seq": INT},
    "reject": {"device": STR, "conv": STR, "msg": STR, "reason": STR},
    "deliver": {"user": STR, "device": STR, "conv": STR, "msg": STR, "seq": INT, "from": STR,
                "body": STR},
    "read": {"user": STR, "device": STR, "conv": STR, "up_to": INT},
    "receipt": {"device": STR, "conv": STR, "reader": STR, "kind": STR, "up_to": INT},
    "join": {"conv": STR, "user": STR, "seq": INT},
    "leave": {"conv": STR, "user": STR, "seq": INT},
    "expire": {"device": STR, "msg": STR},
    "decrypt_error": {"device": STR, "conv": STR, "msg": STR, "reason": STR},
    "online": {"user": STR, "device": STR},
    "offline": {"user": STR, "device": STR},
    "fault": {"name": STR},
    "heal": {"name": STR},
    "end": {"quiescent": BOOL},
}
OPTIONAL = {"send": {"expires_at": INT, "view_once": BOOL, "to": STR}}

ONE_SECOND_NS = 1_000_000_000
INF = float("inf")


class BadInput(Exception):
    def __init__(self, line, reason):
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


def kind_ok(value, kind):
    if kind == STR:
        return isinstance(value, str)
    if kind == INT:
        return (isinstance(value, int) and not isinstance(value, bool)
                and -(2**63) <= value < 2**63)
    return isinstance(value, bool)


def parse_event(text, line):
    try:
        event = json.loads(text)
    except ValueError as error:
        raise BadInput(line, f"malformed JSON ({error})")
    if not isinstance(event, dict):
        raise BadInput(line, "malformed line: not a JSON object")
    if "type" not in event:
        raise BadInput(line, "missing required field 'type'")
    kind = event["type"]
    if not isinstance(kind, str) or kind not in REQUIRED:
        raise BadInput(line, f"unknown type {kind!r}")
    fields = dict(REQUIRED[kind])
    fields["t"] = INT
    for name, field_kind in fields.items():
        if name not in event:
            raise BadInput(line, f"{kind}: missing required field '{name}'")
        if not kind_ok(event[name], field_kind):
            raise BadInput(line, f"{kind}: field '{name}' is not a {KIND_NAMES[field_kind]}")
    for name, field_kind in OPTIONAL.get(kind, {}).items():
        if name in event and not kind_ok(event[name], field_kind):
            raise BadInput(line, f"{kind}: field '{name}' is not a {KIND_NAMES[field_kind]}")
    if kind == "receipt" and event["kind"] not in ("delivered", "read"):
        raise BadInput(line, f"receipt: kind {event['kind']!r} is neither delivered nor read")
    return event


class Verdicts:
    def __init__(self):
        self.count = {name: 0 for name in INVARIANTS}
        self.first = {}

    def violate(self, name, example):
        self.count[name] += 1
        if name not in self.first:
            self.first[name] = example


class Checker:
    def __init__(self):
        self.v = Verdicts()
        self.device_user = {}          # device -> user
        self.device_first_line = {}    # device -> first line naming it
        self.sends = {}                # msg -> send event (with "line")
        self.one_to_one = {}           # conv -> set of users (sender or `to`)
        self.group_convs = set()       # convs with a send without `to`, or a join/leave
        self.msg_seq = {}              # msg -> (seq, line) first seen on an ack or deliver
        self.msg_conv = {}             # msg -> conv of the first ack/deliver
        self.acks = {}                 # msg -> first ack event
        self.rejects = {}              # msg -> first reject line
        self.seq_owner = {}            # (conv, seq) -> (identity, line)
        self.delivers = []             # every deliver event (with "line", "repeat")
        self.first_deliver = {}        # (device, msg) -> line
        self.first_expire = {}         # (device, msg) -> (line, t)
        self.membership = {}           # conv -> list of (seq, line, kind, user)
        self.member_events = {}        # (conv, user) -> list of (seq, line, kind)
        self.receipts = []             # receipt events (with "line")
        self.receipt_last = {}         # (device, conv, reader, kind) -> last up_to
        self.read_max = {}             # (conv, user) -> max read up_to so far
        self.seen_max = {}             # (device, conv) -> max seq shown or acked so far
        self.causal_floor = {}         # msg -> (floor seq, send line)
        self.last_order = {}           # (device, conv) -> (seq, line) of the previous deliver
        self.view_once_pending = {}    # device -> (msg, deliver line)
        self.decrypt_errors = []
        # Latency: connection state and the line of the last change, per device; faults.
        self.online = {}               # device -> bool
        self.online_change_line = {}   # device -> line
        self.faults_active = {}        # fault name -> open count
        self.fault_change_line = 0
        self.send_conditions = {}      # msg -> (sender online, fault active) at the send
        self.latencies_ns = []
        self.end_quiescent = False
        self.end_t = None
        self.last_t = None

    # ---- one pass -------------------------------------------------------------------------
    def note_device(self, event, line):
        device = event.get("device")
        if device is None:
            return
        self.device_first_line.setdefault(device, line)
        user = event.get("user")
        if user is not None and event["type"] in ("send", "deliver", "read", "online", "offline"):
            self.device_user.setdefault(device, user)

    def claim_seq(self, conv, seq, identity, line, what):
        owner = self.seq_owner.get((conv, seq))
        if owner is None:
            self.seq_owner[(conv, seq)] = (identity, line)
        elif owner[0] != identity:
            self.v.violate("seq-agreement",
                           f"line {line}: {what} claims ({conv}, seq {seq}), named "
                           f"{owner[0][0]} {owner[0][1]} on line {owner[1]}")

    def claim_msg_seq(self, msg, conv, seq, line):
        known = self.msg_seq.get(msg)
        if known is None:
            self.msg_seq[msg] = (seq, line)
            self.msg_conv[msg] = conv
        elif known[0] != seq:
            self.v.violate("seq-agreement",
                           f"line {line}: msg {msg} has seq {seq}, seq {known[0]} on line "
                           f"{known[1]}")

    def event(self, e, line):
        kind = e["type"]
        t = e["t"]
        if self.last_t is not None and t < self.last_t:
            raise BadInput(line, f"t {t} decreases (previous t {self.last_t})")
        self.last_t = t
        self.note_device(e, line)
        getattr(self, "on_" + kind)(e, line)

    def on_send(self, e, line):
        msg = e["msg"]
        if msg in self.sends:
            return
        e["line"] = line
        self.sends[msg] = e
        if "to" in e:
            users = self.one_to_one.setdefault(e["conv"], set())
            users.add(e["user"])
            users.add(e["to"])
        else:
            self.group_convs.add(e["conv"])
        floor = self.seen_max.get((e["device"], e["conv"]))
        if floor is not None:
            self.causal_floor[msg] = (floor, line)
        fault_active = any(count > 0 for count in self.faults_active.values())
        self.send_conditions[msg] = (self.online.get(e["device"], False), fault_active)

    def on_ack(self, e, line):
        msg, conv, seq = e["msg"], e["conv"], e["seq"]
        self.claim_seq(conv, seq, ("msg", msg), line, f"ack of {msg}")
        self.claim_msg_seq(msg, conv, seq, line)
        if msg not in self.acks:
            e["line"] = line
            self.acks[msg] = e
        key = (e["device"], conv)
        self.seen_max[key] = max(self.seen_max.get(key, seq), seq)

    def on_reject(self, e, line):
        self.rejects.setdefault(e["msg"], line)

    def on_deliver(self, e, line):
        msg, conv, seq, device = e["msg"], e["conv"], e["seq"], e["device"]
        e["line"] = line
        self.claim_seq(conv, seq, ("msg", msg), line, f"deliver of {msg}")
        self.claim_msg_seq(msg, conv, seq, line)
        key = (device, msg)
        repeat = key in self.first_deliver
        e["repeat"] = repeat
        e["sent_before"] = msg in self.sends
        self.delivers.append(e)
        if repeat:
            self.v.violate("no-duplicate",
                           f"line {line}: msg {msg} shown again on {device} (first on line "
                           f"{self.first_deliver[key]})")
        else:
            self.first_deliver[key] = line
            previous = self.last_order.get((device, conv))
            if previous is not None and seq <= previous[0]:
                self.v.violate("order",
                               f"line {line}: {device} shows seq {seq} of {conv} after seq "
                               f"{previous[0]} (line {previous[1]})")
            self.last_order[(device, conv)] = (seq, line)
        seen_key = (device, conv)
        self.seen_max[seen_key] = max(self.seen_max.get(seen_key, seq), seq)
        # View-once: the previously shown view-once message must be expired by now.
        pending = self.view_once_pending.get(device)
        if pending is not None:
            self.v.violate("expiry",
                           f"line {line}: {device} shows {msg} before expiring view-once "
                           f"{pending[0]} (shown on line {pending[1]})")
            del self.view_once_pending[device]
        send = self.sends.get(msg)
        if send is not None and send.get("view_once") is True:
            if repeat:
                self.v.violate("expiry", f"line {line}: view-once {msg} shown again on {device}")
            self.view_once_pending[device] = (msg, line, e["t"])
        self.measure_latency(e, line)

    def view_once_late(self, pending, t):
        """Whether time t is more than 1 s after the pending view-once show (too late to expire)."""
        return t > pending[2] + ONE_SECOND_NS

    def measure_latency(self, e, line):
        if e["repeat"]:
            return
        send = self.sends.get(e["msg"])
        if send is None:
            return
        sender_online, fault_at_send = self.send_conditions[e["msg"]]
        send_line = send["line"]
        sender, recipient = send["device"], e["device"]
        if not sender_online or fault_at_send:
            return
        if any(count > 0 for count in self.faults_active.values()):
            return
        if self.fault_change_line > send_line:
            return
        if not self.online.get(recipient, False) or not self.online.get(sender, False):
            return
        if self.online_change_line.get(recipient, 0) > send_line:
            return
        if self.online_change_line.get(sender, 0) > send_line:
            return
        self.latencies_ns.append(e["t"] - send["t"])

    def on_read(self, e, line):
        key = (e["conv"], e["user"])
        self.read_max[key] = max(self.read_max.get(key, e["up_to"]), e["up_to"])

    def on_receipt(self, e, line):
        e["line"] = line
        key = (e["device"], e["conv"], e["reader"], e["kind"])
        last = self.receipt_last.get(key)
        if last is not None and e["up_to"] < last:
            self.v.violate("receipts",
                           f"line {line}: {e['kind']} receipt of {e['reader']} on {e['device']} "
                           f"goes back from {last} to {e['up_to']}")
        self.receipt_last[key] = e["up_to"] if last is None else max(last, e["up_to"])
        if e["kind"] == "read":
            read = self.read_max.get((e["conv"], e["reader"]))
            if read is None or read < e["up_to"]:
                self.v.violate("receipts",
                               f"line {line}: read receipt of {e['reader']} up to {e['up_to']} "
                               f"in {e['conv']}, read only up to {read}")
        else:
            self.receipts.append(e)

    def on_join(self, e, line):
        self.on_membership(e, line)

    def on_leave(self, e, line):
        self.on_membership(e, line)

    def on_membership(self, e, line):
        conv, user, seq, kind = e["conv"], e["user"], e["seq"], e["type"]
        self.claim_seq(conv, seq, (kind, user), line, f"{kind} of {user}")
        self.membership.setdefault(conv, []).append((seq, line, kind, user))
        self.group_convs.add(conv)
        self.member_events.setdefault((conv, user), []).append((seq, line, kind))

    def on_expire(self, e, line):
        key = (e["device"], e["msg"])
        self.first_expire.setdefault(key, (line, e["t"]))
        pending = self.view_once_pending.get(e["device"])
        if pending is not None and pending[0] == e["msg"]:
            if self.view_once_late(pending, e["t"]):
                self.v.violate("expiry",
                               f"line {line}: view-once {e['msg']} expired on {e['device']} at "
                               f"t {e['t']}, shown at t {pending[2]} (line {pending[1]})")
            del self.view_once_pending[e["device"]]

    def on_decrypt_error(self, e, line):
        e["line"] = line
        self.decrypt_errors.append(e)

    def on_online(self, e, line):
        self.online[e["device"]] = True
        self.online_change_line[e["device"]] = line

    def on_offline(self, e, line):
        self.online[e["device"]] = False
        self.online_change_line[e["device"]] = line

    def on_fault(self, e, line):
        self.faults_active[e["name"]] = self.faults_active.get(e["name"], 0) + 1
        self.fault_change_line = line

    def on_heal(self, e, line):
        self.faults_active[e["name"]] = max(0, self.faults_active.get(e["name"], 0) - 1)
        self.fault_change_line = line

    def on_end(self, e, line):
        self.end_quiescent = e["quiescent"]
        self.end_t = e["t"]

    # ---- end phase --------------------------------------------------------------------------
    def finish(self, latency_p99_ms):
        v = self.v
        run_end_t = self.end_t if self.end_t is not None else (self.last_t or 0)

        # Sort each (conv, user)'s membership events once, for bisect lookups.
        for events in self.member_events.values():
            events.sort()

        # no-phantom, membership, expiry (too late a show; 1 s rule), no-rejected-delivery.
        for d in self.delivers:
            line, msg, device = d["line"], d["msg"], d["device"]
            send = self.sends.get(msg) if d["sent_before"] else None
            if send is None:
                v.violate("no-phantom", f"line {line}: {device} shows {msg}, not sent before")
            elif (send["conv"], send["user"], send["body"]) != (d["conv"], d["from"], d["body"]):
                v.violate("no-phantom",
                          f"line {line}: {device} shows {msg} as (conv {d['conv']}, from "
                          f"{d['from']}, body {d['body']}), sent as (conv {send['conv']}, from "
                          f"{send['user']}, body {send['body']}) on line {send['line']}")
            if not self.member_is(d["conv"], d["user"], d["seq"]):
                v.violate("membership",
                          f"line {line}: {device} of {d['user']} shows {msg} at seq {d['seq']} "
                          f"of {d['conv']}, {d['user']} not a member then")
            if msg in self.rejects:
                v.violate("no-rejected-delivery",
                          f"line {line}: {device} shows {msg}, rejected on line "
                          f"{self.rejects[msg]}")
            if send is not None and "expires_at" in send:
                expires_at = send["expires_at"]
                if d["t"] >= expires_at:
                    v.violate("expiry", f"line {line}: {device} shows {msg} at t {d['t']}, "
                                        f"expires_at {expires_at}")
                if not d["repeat"] and run_end_t > expires_at + ONE_SECOND_NS:
                    expired = self.first_expire.get((device, msg))
                    if expired is None or expired[1] > expires_at + ONE_SECOND_NS:
                        when = "never" if expired is None else f"at t {expired[1]}"
                        v.violate("expiry",
                                  f"line {line}: {device} shows disappearing {msg} "
                                  f"(expires_at {expires_at}), expired {when}")
        for device, pending in sorted(self.view_once_pending.items()):
            if self.view_once_late(pending, run_end_t):
                v.violate("expiry", f"line {pending[1]}: view-once {pending[0]} shown on "
                                    f"{device}, never expired")
        for msg, line in self.rejects.items():
            if msg in self.acks:
                v.violate("no-rejected-delivery",
                          f"line {self.acks[msg]['line']}: rejected {msg} (line {line}) acked")

        # sender-fifo: consecutive acked sends of one (device, conv).
        by_sender = {}
        for msg, send in self.sends.items():
            if msg in self.acks:
                by_sender.setdefault((send["device"], send["conv"]), []).append(
                    (send["line"], msg, self.acks[msg]["seq"]))
        for sends in by_sender.values():
            sends.sort()
            for (_, m1, s1), (line2, m2, s2) in zip(sends, sends[1:]):
                if s2 <= s1:
                    v.violate("sender-fifo",
                              f"line {line2}: {m2} sent after {m1} gets seq {s2}, {m1} seq {s1}")

        # causal.
        for msg, (floor, line) in self.causal_floor.items():
            seq = self.msg_seq.get(msg)
            if seq is not None and seq[0] <= floor:
                v.violate("causal",
                          f"line {line}: {msg} sent after its device saw seq {floor} of "
                          f"{self.sends[msg]['conv']}, gets seq {seq[0]}")

        # decrypt.
        for e in self.decrypt_errors:
            send = self.sends.get(e["msg"])
            if send is None:
                continue
            sender, conv = send["user"], e["conv"]
            if conv in self.one_to_one:
                current = sender in self.one_to_one[conv]
            else:
                written = [ev for ev in self.member_events.get((conv, sender), [])
                           if ev[1] < e["line"]]
                current = bool(written) and max(written)[2] == "join"
            if current:
                v.violate("decrypt",
                          f"line {e['line']}: {e['device']} cannot decrypt {e['msg']} from "
                          f"current member {sender}")

        self.judge_meant_for()

        # latency.
        latency_note = "no deliveries measured"
        if self.latencies_ns:
            values = sorted(self.latencies_ns)
            n = len(values)

            def rank(q):
                return values[max(0, math.ceil(q * n) - 1)]

            p50, p99 = rank(0.50), rank(0.99)
            latency_note = (f"n {n}, p50 {p50 / 1e6:.3f} ms, p99 {p99 / 1e6:.3f} ms, "
                            f"max {values[-1] / 1e6:.3f} ms")
            if latency_p99_ms is not None and p99 > latency_p99_ms * 1e6:
                v.violate("latency", f"p99 {p99 / 1e6:.3f} ms over the {latency_p99_ms} ms "
                                     f"bound ({latency_note})")
        return latency_note

    def member_is(self, conv, user, seq):
        if conv in self.one_to_one:
            return user in self.one_to_one[conv]
        if conv not in self.group_convs:
            return True  # neither 1:1 nor a group: a conversation of unknown kind
        events = self.member_events.get((conv, user))
        if not events:
            return False
        index = bisect.bisect_left(events, (seq,)) - 1  # the last event with seq below `seq`
        return index >= 0 and events[index][2] == "join"

    def judge_meant_for(self):
        """no-loss, gap-free and delivered receipts: all need who each message is meant for."""
        v = self.v
        devices_of = {}
        for device, user in self.device_user.items():
            devices_of.setdefault(user, []).append(device)
        for devices in devices_of.values():
            devices.sort()

        # Where each (device, msg) and (user, msg) was first shown or expired.
        cover = {}
        for key, line in self.first_deliver.items():
            cover[key] = line
        for key, (line, _) in self.first_expire.items():
            cover[key] = min(cover.get(key, INF), line)
        user_cover = {}
        for (device, msg), line in cover.items():
            user = self.device_user.get(device)
            if user is not None:
                key = (user, msg)
                user_cover[key] = min(user_cover.get(key, INF), line)

        # The reader's own message is on the device that sent it from the send on.
        for msg, send in self.sends.items():
            key = (send["user"], msg)
            user_cover[key] = min(user_cover.get(key, INF), send["line"])

        # The messages that can be meant for anyone, per conversation, in seq order.
        by_conv = {}
        for msg, send in self.sends.items():
            if msg in self.rejects or msg not in self.msg_seq:
                continue
            seq = self.msg_seq[msg][0]
            by_conv.setdefault(send["conv"], []).append((seq, send["line"], msg))

        owed_device = {}   # (device, conv) -> list of (seq, cover line, msg)
        owed_user = {}     # (user, conv) -> list of (seq, cover line, msg)
        quiescent = self.end_quiescent
        for conv, messages in by_conv.items():
            messages.sort()
            if conv in self.one_to_one:
                events = []
                members = set(self.one_to_one[conv])
            else:
                events = sorted(self.membership.get(conv, []))
                members = set()
            next_event = 0
            for seq, send_line, msg in messages:
                while next_event < len(events) and events[next_event][0] < seq:
                    _, _, kind, user = events[next_event]
                    if kind == "join":
                        members.add(user)
                    else:
                        members.discard(user)
                    next_event += 1
                sender_device = self.sends[msg]["device"]
                for user in sorted(members):
                    user_owed = False
                    for device in devices_of.get(user, []):
                        if device == sender_device or self.device_first_line[device] >= send_line:
                            continue
                        user_owed = True
                        line = cover.get((device, msg), INF)
                        owed_device.setdefault((device, conv), []).append((seq, line, msg))
                        if quiescent and msg in self.acks and line == INF:
                            v.violate("no-loss",
                                      f"line {send_line}: acked {msg} (seq {seq} of {conv}) "
                                      f"never reached {device} of {user}")
                    if user_owed:
                        owed_user.setdefault((user, conv), []).append(
                            (seq, user_cover.get((user, msg), INF), msg))

        # gap-free: each first show of seq s on (device, conv) needs every owed smaller seq
        # shown or expired there before it.
        prefix_device = {key: self.prefix_latest(entries) for key, entries in owed_device.items()}
        for d in self.delivers:
            if d["repeat"]:
                continue
            table = prefix_device.get((d["device"], d["conv"]))
            if table is None:
                continue
            seqs, latest = table
            index = bisect.bisect_left(seqs, d["seq"]) - 1  # the owed seqs below d's seq
            if index >= 0 and latest[index][0] > d["line"]:
                late_line, late_msg = latest[index]
                where = "never" if late_line == INF else f"only on line {late_line}"
                v.violate("gap-free",
                          f"line {d['line']}: {d['device']} shows seq {d['seq']} of {d['conv']} "
                          f"before owed {late_msg} (shown/expired {where})")

        # receipts (delivered): every message owed to the reader with seq <= up_to shown or
        # expired on one of the reader's devices before the receipt.
        prefix_user = {key: self.prefix_latest(entries) for key, entries in owed_user.items()}
        for r in self.receipts:
            table = prefix_user.get((r["reader"], r["conv"]))
            if table is None:
                continue
            seqs, latest = table
            index = bisect.bisect_right(seqs, r["up_to"]) - 1  # the owed seqs up to up_to
            if index >= 0 and latest[index][0] > r["line"]:
                late_line, late_msg = latest[index]
                where = "never" if late_line == INF else f"only on line {late_line}"
                v.violate("receipts",
                          f"line {r['line']}: delivered receipt of {r['reader']} up to "
                          f"{r['up_to']} in {r['conv']} before {late_msg} reached the reader "
                          f"({where})")

    @staticmethod
    def prefix_latest(entries):
        """Sorted seqs, and per prefix the (latest cover line, its msg) among them."""
        entries.sort()
        seqs, latest = [], []
        best = (-1, None)
        for seq, line, msg in entries:
            if line > best[0]:
                best = (line, msg)
            seqs.append(seq)
            latest.append(best)
        return seqs, latest


def main(argv):
    args = argv[1:]
    latency_p99_ms = None
    if "--latency-p99-ms" in args:
        at = args.index("--latency-p99-ms")
        try:
            latency_p99_ms = float(args[at + 1])
        except (IndexError, ValueError):
            print("usage: history_check.py FILE [--latency-p99-ms N]", file=sys.stderr)
            return 2
        del args[at:at + 2]
    if len(args) != 1:
        print("usage: history_check.py FILE [--latency-p99-ms N]", file=sys.stderr)
        return 2
    path = args[0]
    checker = Checker()
    try:
        stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
        with stream:
            for line_number, text in enumerate(stream, start=1):
                checker.event(parse_event(text, line_number), line_number)
    except BadInput as error:
        print(f"history_check: {path}: bad input: {error}", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError) as error:
        print(f"history_check: {path}: cannot read: {error}", file=sys.stderr)
        return 2
    latency_note = checker.finish(latency_p99_ms)
    v = checker.v
    for name in INVARIANTS:
        if v.count[name]:
            print(f"{name}: VIOLATED ({v.count[name]}): {v.first[name]}")
        elif name == "latency":
            print(f"latency: valid ({latency_note})")
        else:
            print(f"{name}: valid")
    return 1 if any(v.count.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
