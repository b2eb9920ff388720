// The run as a timeline for Perfetto (ui.perfetto.dev) and chrome://tracing: Chrome's trace
// event JSON format, written as the run goes (`msgsim run|replay --perfetto FILE`).
//
// What it shows:
//  - a process per node group ("chat", "device", ...), a thread (track) per node;
//  - every data frame as a 1 ns slice named by its type on the sender's track at the send and
//    on the receiver's track at the delivery, joined by a flow arrow (flow id = the frame's
//    number in the run); frames lost to a crash or a reset have the send slice only;
//  - node lifecycle as slices on the node's track: "down (crash)", "down (host-loss)",
//    "down (fail-stop)", "down (stopped)", "draining", from when it began to when it ended;
//  - every fault as a slice from its begin to its heal on the "faults" process, one track per
//    fault that overlaps another ("lane");
//  - the devices' history events (send, ack, deliver, ...) as instant events on the device's
//    track, the history line as their arguments.
//
// Times are virtual, in microseconds with nanosecond decimals, so the same seed writes the same
// file. The output is bounded: at most `events_max` events besides the track names (two
// metadata events per node and per group, written first and always); frames and history events
// stop at nine tenths of it so that fault and lifecycle slices still fit, and a file that was
// cut says so in an instant event "msgsim: trace truncated ..." at the first drop and in
// otherData.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "oracle/event.h"
#include "sim/scenario.h"
#include "sim/simulator.h"

namespace msgsim::sim {

inline constexpr size_t kPerfettoEventsMaxDefault = 2'000'000;  // about 250 MB of JSON

class PerfettoWriter {
 public:
  // `frame_label` names a frame's type from its bytes ("Send"); `events_max` >= 10.
  PerfettoWriter(std::ostream& out, const Scenario& scenario, uint64_t seed, size_t events_max,
                 const char* (*frame_label)(ByteView));
  PerfettoWriter(const PerfettoWriter&) = delete;
  PerfettoWriter& operator=(const PerfettoWriter&) = delete;

  void frame(const FrameRecord& record);
  // The simulator's trace records: node lifecycle (start, crash, drain, stop, host-loss, fail-stop).
  void lifecycle(const TraceRecord& record);
  void history(NodeId node, int64_t time_ns, const history::Event& event);
  // A fault began; returns the handle fault_end takes.
  size_t fault_begin(int64_t time_ns, const std::string& label);
  void fault_end(size_t fault, int64_t time_ns);
  // Closes the slices still open at the run's end and the JSON document.
  void finish(int64_t end_ns);

  size_t events_written() const { return written_; }
  size_t events_dropped() const { return dropped_; }

 private:
  enum class Priority : uint8_t { bulk, slice };
  struct PendingFrame {
    uint64_t flow_id;
    uint64_t data_hash;
  };
  struct NodeTrack {
    int64_t down_since_ns = -1;
    std::string down_reason;
    int64_t draining_since_ns = -1;
    int64_t next_free_ns = 0;  // frame slices of one track never overlap
  };
  struct OpenFault {
    std::string label;
    int64_t begin_ns;
    size_t lane;
    bool open;
  };

  bool admit(Priority priority, int64_t time_ns);
  void emit(const std::string& event);
  void slice(uint32_t pid, uint32_t tid, int64_t begin_ns, int64_t end_ns, std::string_view name,
             std::string_view category, const std::string& args_json);
  void close_down(NodeId node, int64_t time_ns);
  void close_draining(NodeId node, int64_t time_ns);
  uint32_t pid_of(NodeId node) const { return node_pid_[node]; }
  static uint32_t tid_of(NodeId node) { return node + 1; }
  // Thread ids are unique across processes (some viewers key threads by tid alone).
  uint32_t lane_tid(size_t lane) const { return static_cast<uint32_t>(tracks_.size() + 1 + lane); }

  std::ostream& out_;
  size_t events_max_;
  const char* (*frame_label_)(ByteView);
  std::vector<std::string> node_names_;
  std::vector<uint32_t> node_pid_;
  uint32_t faults_pid_ = 1;
  std::vector<NodeTrack> tracks_;
  // Frames sent and not yet delivered, per (connection, sender), in send order.
  std::map<std::pair<ConnId, NodeId>, std::deque<PendingFrame>> in_flight_;
  uint64_t next_flow_id_ = 1;
  std::vector<OpenFault> faults_;
  std::vector<int64_t> lane_free_ns_;  // when each lane of the faults track is free again
  size_t written_ = 0;
  size_t dropped_ = 0;
  int64_t first_drop_ns_ = -1;
  bool first_event_ = true;
  bool finished_ = false;
  std::string scenario_name_;
  uint64_t seed_;
};

}  // namespace msgsim::sim
