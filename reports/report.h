// The capacity report: everything `msgsim plan` computed and simulated, rendered as a
// self-contained HTML page with SVG plots (no JavaScript, no external assets) and as a Markdown
// summary. Plots: latency against load per role, the reconnect storm over time (clients back
// online, and the busiest survivor's CPU), servers needed against DAU, and the model's
// predicted latency against live-measured latency when a live bench result is given.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "reports/plan.h"
#include "reports/slices.h"

namespace msgsim::reports {

// One offered load of the model-against-reality comparison.
struct ModelPoint {
  double offered_per_s = 0;
  double predicted_p50_ms = 0, predicted_p99_ms = 0;  // the simulator with the cost table
  std::optional<double> measured_p50_ms, measured_p99_ms;  // from `msgsim live bench --json`
  std::optional<double> predicted_delivered_per_s, measured_delivered_per_s;
};

// The comparison's verdicts, one rule for the Markdown and the HTML report.
// Below the knee: the live bench delivered at least 95 % of the offered rate and its p99 stayed
// within 3x the p99 of the lightest measured load (the role curves' knee rule).
bool below_knee(const ModelPoint& point, const std::vector<ModelPoint>& all);
// The model's error against the measurement in percent ((predicted - measured) / measured).
double error_percent(double predicted, double measured);
constexpr double kModelBarPercent = 20;

struct Report {
  Plan plan;
  std::string cost_table_label;  // where the cost table came from
  std::vector<RoleCurve> curves;
  std::optional<ChatSliceResult> chat_slice;
  std::vector<StormResult> storms;
  std::vector<double> dau_axis;
  std::vector<std::vector<double>> servers_by_role;  // [role][dau index], plus total last
  std::vector<std::string> servers_series_names;
  std::vector<ModelPoint> model;
  std::string model_note;  // what the comparison ran, and what is missing
  double slices_seconds = 0;
};

std::string render_html(const Report& report);
std::string render_markdown(const Report& report);

// A line plot as an <svg> element: series of (x, y) with axes, ticks, a legend, a title.
struct Series {
  std::string name;
  std::vector<double> x, y;
};
std::string svg_line_plot(const std::string& id, const std::string& title, const std::string& x_label,
                          const std::string& y_label, const std::vector<Series>& series, bool log_x = false);

}  // namespace msgsim::reports
