#include "sim/perfetto.h"

#include <algorithm>
#include <cstring>

#include "impl/base/assert.h"
#include "impl/base/hash.h"
#include "oracle/jsonl.h"

namespace msgsim::sim {

namespace {

// Virtual nanoseconds as the format's microseconds, with the nanoseconds as three decimals
// (integer arithmetic only: the same text on every machine).
std::string micros(int64_t ns) {
  MSGSIM_ASSERT_GE(ns, 0);
  std::string out = std::to_string(ns / 1000);
  const int64_t rest = ns % 1000;
  if (rest != 0) out += "." + std::to_string(1000 + rest).substr(1);
  return out;
}

std::string quoted(std::string_view text) {
  std::string out;
  history::append_json_string(out, text);
  return out;
}

}  // namespace

PerfettoWriter::PerfettoWriter(std::ostream& out, const Scenario& scenario, uint64_t seed, size_t events_max,
                               const char* (*frame_label)(ByteView))
    : out_(out), events_max_(events_max), frame_label_(frame_label), scenario_name_(scenario.name), seed_(seed) {
  MSGSIM_ASSERT_GE(events_max, size_t{10});
  out_ << "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
  // Metadata: the faults process first, then a process per node group in the scenario's order.
  std::vector<std::string> groups;
  faults_pid_ = 1;
  emit("{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":1,\"tid\":0,\"args\":{\"name\":\"faults\"}}");
  emit("{\"ph\":\"M\",\"name\":\"process_sort_index\",\"pid\":1,\"tid\":0,\"args\":{\"sort_index\":0}}");
  for (size_t i = 0; i < scenario.nodes.size(); ++i) {
    const NodeSpec& spec = scenario.nodes[i];
    auto found = std::find(groups.begin(), groups.end(), spec.group);
    if (found == groups.end()) {
      groups.push_back(spec.group);
      const auto pid = static_cast<uint32_t>(groups.size() + 1);
      emit("{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":" + std::to_string(pid) +
           ",\"tid\":0,\"args\":{\"name\":" + quoted(spec.group + " (" + spec.role + ")") + "}}");
      emit("{\"ph\":\"M\",\"name\":\"process_sort_index\",\"pid\":" + std::to_string(pid) +
           ",\"tid\":0,\"args\":{\"sort_index\":" + std::to_string(pid) + "}}");
      found = groups.end() - 1;
    }
    const auto pid = static_cast<uint32_t>(found - groups.begin()) + 2;
    node_pid_.push_back(pid);
    node_names_.push_back(spec.name);
    const auto node = static_cast<NodeId>(i);
    emit("{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":" + std::to_string(pid) + ",\"tid\":" +
         std::to_string(tid_of(node)) + ",\"args\":{\"name\":" +
         quoted(spec.name + " (" + scenario.regions[spec.region] + ")") + "}}");
    emit("{\"ph\":\"M\",\"name\":\"thread_sort_index\",\"pid\":" + std::to_string(pid) + ",\"tid\":" +
         std::to_string(tid_of(node)) + ",\"args\":{\"sort_index\":" + std::to_string(tid_of(node)) + "}}");
  }
  tracks_.resize(scenario.nodes.size());
}

bool PerfettoWriter::admit(Priority priority, int64_t time_ns) {
  // Frames and history events may use nine tenths of the budget; slices the rest as well.
  const size_t limit = priority == Priority::bulk ? events_max_ - events_max_ / 10 : events_max_;
  if (written_ < limit) return true;
  dropped_++;
  if (first_drop_ns_ < 0) first_drop_ns_ = time_ns;
  return false;
}

void PerfettoWriter::emit(const std::string& event) {
  MSGSIM_ASSERT(!finished_, "a Perfetto event after the document was closed");
  if (!first_event_) out_ << ",\n";
  first_event_ = false;
  out_ << event;
  written_++;
}

void PerfettoWriter::slice(uint32_t pid, uint32_t tid, int64_t begin_ns, int64_t end_ns, std::string_view name,
                           std::string_view category, const std::string& args_json) {
  std::string e = "{\"ph\":\"X\",\"pid\":" + std::to_string(pid) + ",\"tid\":" + std::to_string(tid) +
                  ",\"ts\":" + micros(begin_ns) + ",\"dur\":" + micros(std::max<int64_t>(0, end_ns - begin_ns)) +
                  ",\"name\":" + quoted(name) + ",\"cat\":" + quoted(category);
  if (!args_json.empty()) e += ",\"args\":" + args_json;
  emit(e + "}");
}

void PerfettoWriter::frame(const FrameRecord& r) {
  if (!admit(Priority::bulk, r.time_ns)) return;
  if (r.from >= tracks_.size() || r.to >= tracks_.size()) return;
  const char* type = frame_label_(r.data);
  const uint64_t data_hash = hash_bytes(r.data);
  // The slice of this frame on its track: 1 ns long, after the previous frame slice of the
  // track, so that a handler sending several frames at one instant gets one slice per frame
  // and each flow arrow binds to its own slice.
  const NodeId at = r.delivered ? r.to : r.from;
  NodeTrack& track = tracks_[at];
  const int64_t begin_ns = std::max(r.time_ns, track.next_free_ns);
  track.next_free_ns = begin_ns + 1;
  const auto key = std::make_pair(r.conn, r.from);
  uint64_t flow_id = 0;
  if (!r.delivered) {
    flow_id = next_flow_id_++;
    in_flight_[key].push_back(PendingFrame{flow_id, data_hash});
  } else {
    auto it = in_flight_.find(key);
    if (it == in_flight_.end()) return;  // its send was not written (the trace was full)
    // Frames of a direction arrive in send order, so the head is this frame; the hash guards
    // the pairing all the same.
    auto& queue = it->second;
    while (!queue.empty() && queue.front().data_hash != data_hash) queue.pop_front();
    if (queue.empty()) {
      in_flight_.erase(it);
      return;
    }
    flow_id = queue.front().flow_id;
    queue.pop_front();
    if (queue.empty()) in_flight_.erase(it);
  }
  const NodeId peer = r.delivered ? r.from : r.to;
  const std::string args = "{\"" + std::string(r.delivered ? "from" : "to") + "\":" + quoted(node_names_[peer]) +
                           ",\"bytes\":" + std::to_string(r.data.size()) + ",\"frame\":" + std::to_string(flow_id) +
                           "}";
  slice(pid_of(at), tid_of(at), begin_ns, begin_ns + 1, type, r.delivered ? "receive" : "send", args);
  emit("{\"ph\":\"" + std::string(r.delivered ? "f\",\"bp\":\"e" : "s") + "\",\"pid\":" + std::to_string(pid_of(at)) +
       ",\"tid\":" + std::to_string(tid_of(at)) + ",\"ts\":" + micros(begin_ns) + ",\"id\":" + std::to_string(flow_id) +
       ",\"name\":" + quoted(type) + ",\"cat\":\"frame\"}");
}

void PerfettoWriter::close_down(NodeId node, int64_t time_ns) {
  NodeTrack& track = tracks_[node];
  if (track.down_since_ns < 0) return;
  if (admit(Priority::slice, time_ns)) {
    slice(pid_of(node), tid_of(node), track.down_since_ns, time_ns, "down (" + track.down_reason + ")", "lifecycle",
          "");
  }
  track.down_since_ns = -1;
}

void PerfettoWriter::close_draining(NodeId node, int64_t time_ns) {
  NodeTrack& track = tracks_[node];
  if (track.draining_since_ns < 0) return;
  if (admit(Priority::slice, time_ns)) {
    slice(pid_of(node), tid_of(node), track.draining_since_ns, time_ns, "draining", "lifecycle", "");
  }
  track.draining_since_ns = -1;
}

void PerfettoWriter::lifecycle(const TraceRecord& r) {
  if (r.node >= tracks_.size()) return;
  NodeTrack& track = tracks_[r.node];
  const std::string_view kind = r.kind;
  if (kind == "start") {
    close_down(r.node, r.time_ns);
  } else if (kind == "drain") {
    track.draining_since_ns = r.time_ns;
  } else if (kind == "crash" || kind == "stop" || kind == "host-loss" || kind == "fail-stop") {
    close_draining(r.node, r.time_ns);
    if (track.down_since_ns >= 0) {  // a host lost while its process was already down
      if (kind == "host-loss") track.down_reason = "host-loss";
      return;
    }
    track.down_since_ns = r.time_ns;
    track.down_reason = kind == "stop" ? "stopped" : std::string(kind);
  }
}

void PerfettoWriter::history(NodeId node, int64_t time_ns, const history::Event& event) {
  if (node >= tracks_.size()) return;
  if (!admit(Priority::bulk, time_ns)) return;
  std::string line = history::to_jsonl(event);
  while (!line.empty() && line.back() == '\n') line.pop_back();
  emit("{\"ph\":\"i\",\"s\":\"t\",\"pid\":" + std::to_string(pid_of(node)) + ",\"tid\":" +
       std::to_string(tid_of(node)) + ",\"ts\":" + micros(time_ns) + ",\"name\":" +
       quoted(history::to_string(event.type)) + ",\"cat\":\"history\",\"args\":" + line + "}");
}

size_t PerfettoWriter::fault_begin(int64_t time_ns, const std::string& label) {
  // The first lane free at this time, so that overlapping faults get tracks of their own.
  size_t lane = 0;
  while (lane < lane_free_ns_.size() && lane_free_ns_[lane] > time_ns) lane++;
  if (lane == lane_free_ns_.size()) {
    lane_free_ns_.push_back(0);
    if (admit(Priority::slice, time_ns)) {
      emit("{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":" + std::to_string(faults_pid_) + ",\"tid\":" +
           std::to_string(lane_tid(lane)) + ",\"args\":{\"name\":\"faults " + std::to_string(lane + 1) + "\"}}");
    }
  }
  lane_free_ns_[lane] = INT64_MAX;  // until it ends
  faults_.push_back(OpenFault{label, time_ns, lane, true});
  return faults_.size() - 1;
}

void PerfettoWriter::fault_end(size_t fault, int64_t time_ns) {
  MSGSIM_ASSERT_LT(fault, faults_.size());
  OpenFault& f = faults_[fault];
  if (!f.open) return;
  f.open = false;
  lane_free_ns_[f.lane] = time_ns;
  if (!admit(Priority::slice, time_ns)) return;
  const auto space = f.label.find(' ');
  const std::string kind = f.label.substr(0, space);
  slice(faults_pid_, lane_tid(f.lane), f.begin_ns, time_ns, f.label, "fault",
        "{\"kind\":" + quoted(kind) + "}");
}

void PerfettoWriter::finish(int64_t end_ns) {
  if (finished_) return;
  for (size_t i = 0; i < faults_.size(); ++i) fault_end(i, end_ns);
  for (NodeId node = 0; node < tracks_.size(); ++node) {
    close_draining(node, end_ns);
    close_down(node, end_ns);
  }
  if (dropped_ > 0) {
    // Past the budget on purpose: the note is what makes a cut file honest.
    emit("{\"ph\":\"i\",\"s\":\"g\",\"pid\":" + std::to_string(faults_pid_) + ",\"tid\":0,\"ts\":" +
         micros(first_drop_ns_) + ",\"name\":" +
         quoted("msgsim: trace truncated at " + std::to_string(events_max_) + " events; " + std::to_string(dropped_) +
                " events from here on were dropped") +
         ",\"cat\":\"msgsim\"}");
  }
  finished_ = true;
  out_ << "\n],\"otherData\":{\"generator\":\"msgsim\",\"scenario\":" << quoted(scenario_name_)
       << ",\"seed\":\"" << seed_ << "\"" << ",\"events_max\":" << events_max_ << ",\"truncated\":"
       << (dropped_ > 0 ? "true" : "false") << ",\"events_dropped\":" << dropped_ << "}}\n";
}

}  // namespace msgsim::sim
