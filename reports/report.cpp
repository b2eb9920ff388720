#include "reports/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace msgsim::reports {

namespace {

std::string fmt(double value, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  return buf;
}

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// A "nice" tick step for a span: 1, 2 or 5 times a power of ten.
double nice_step(double span, int ticks) {
  if (span <= 0) return 1;
  const double raw = span / ticks;
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * power) return m * power;
  return 10 * power;
}

std::string tick_label(double v) {
  const double a = std::fabs(v);
  if (a >= 1e9) return fmt(v / 1e9, a >= 1e10 ? 0 : 1) + "G";
  if (a >= 1e6) return fmt(v / 1e6, a >= 1e7 ? 0 : 1) + "M";
  if (a >= 1e3) return fmt(v / 1e3, a >= 1e4 ? 0 : 1) + "k";
  if (a == 0 || a >= 10) return fmt(v, 0);
  if (a >= 1) return fmt(v, 1);
  return fmt(v, 2);
}

const char* kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

}  // namespace

std::string svg_line_plot(const std::string& id, const std::string& title, const std::string& x_label,
                          const std::string& y_label, const std::vector<Series>& series, bool log_x) {
  const double width = 640, height = 360, left = 70, right = 170, top = 36, bottom = 50;
  const double plot_w = width - left - right, plot_h = height - top - bottom;
  double x_min = INFINITY, x_max = -INFINITY, y_max = 0;
  const auto tx = [&](double x) { return log_x ? std::log10(std::max(x, 1e-12)) : x; };
  for (const Series& s : series) {
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      x_min = std::min(x_min, tx(s.x[i]));
      x_max = std::max(x_max, tx(s.x[i]));
      y_max = std::max(y_max, s.y[i]);
    }
  }
  if (!std::isfinite(x_min)) x_min = 0, x_max = 1;
  if (x_max <= x_min) x_max = x_min + 1;
  if (y_max <= 0) y_max = 1;
  const double y_step = nice_step(y_max, 5);
  y_max = std::ceil(y_max / y_step) * y_step;
  const auto px = [&](double x) { return left + (tx(x) - x_min) / (x_max - x_min) * plot_w; };
  const auto py = [&](double y) { return top + plot_h - y / y_max * plot_h; };

  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"" << escape(id) << "\" class=\"plot\" width=\"" << width
    << "\" height=\"" << height << "\" viewBox=\"0 0 " << width << " " << height << "\" role=\"img\" aria-label=\""
    << escape(title) << "\">\n";
  o << "<title>" << escape(title) << "</title>\n";
  o << "<rect x=\"0\" y=\"0\" width=\"" << width << "\" height=\"" << height << "\" fill=\"white\"/>\n";
  o << "<text x=\"" << left << "\" y=\"20\" font-size=\"14\" font-weight=\"bold\">" << escape(title) << "</text>\n";
  // Axes and ticks.
  o << "<g stroke=\"#444\" fill=\"none\"><line x1=\"" << left << "\" y1=\"" << top + plot_h << "\" x2=\"" << left + plot_w
    << "\" y2=\"" << top + plot_h << "\"/><line x1=\"" << left << "\" y1=\"" << top << "\" x2=\"" << left << "\" y2=\""
    << top + plot_h << "\"/></g>\n";
  o << "<g font-size=\"11\" fill=\"#222\">\n";
  for (double y = 0; y <= y_max + y_step / 2; y += y_step) {
    o << "<line x1=\"" << left - 4 << "\" y1=\"" << py(y) << "\" x2=\"" << left + plot_w << "\" y2=\"" << py(y)
      << "\" stroke=\"#ddd\"/><text x=\"" << left - 6 << "\" y=\"" << py(y) + 4 << "\" text-anchor=\"end\">"
      << tick_label(y) << "</text>\n";
  }
  if (log_x) {
    for (double e = std::floor(x_min); e <= x_max + 1e-9; e += 1) {
      if (e < x_min - 1e-9) continue;
      const double x = left + (e - x_min) / (x_max - x_min) * plot_w;
      o << "<line x1=\"" << x << "\" y1=\"" << top + plot_h << "\" x2=\"" << x << "\" y2=\"" << top + plot_h + 4
        << "\" stroke=\"#444\"/><text x=\"" << x << "\" y=\"" << top + plot_h + 16 << "\" text-anchor=\"middle\">"
        << tick_label(std::pow(10.0, e)) << "</text>\n";
    }
  } else {
    const double x_step = nice_step(x_max - x_min, 6);
    for (double x = std::ceil(x_min / x_step) * x_step; x <= x_max + x_step / 1e6; x += x_step) {
      o << "<line x1=\"" << px(x) << "\" y1=\"" << top + plot_h << "\" x2=\"" << px(x) << "\" y2=\"" << top + plot_h + 4
        << "\" stroke=\"#444\"/><text x=\"" << px(x) << "\" y=\"" << top + plot_h + 16 << "\" text-anchor=\"middle\">"
        << tick_label(x) << "</text>\n";
    }
  }
  o << "<text x=\"" << left + plot_w / 2 << "\" y=\"" << height - 8 << "\" text-anchor=\"middle\">" << escape(x_label)
    << "</text>\n";
  o << "<text transform=\"translate(14," << top + plot_h / 2 << ") rotate(-90)\" text-anchor=\"middle\">"
    << escape(y_label) << "</text>\n</g>\n";
  // Series and legend.
  for (size_t k = 0; k < series.size(); ++k) {
    const Series& s = series[k];
    const char* colour = kColours[k % (sizeof kColours / sizeof kColours[0])];
    o << "<polyline class=\"series\" data-name=\"" << escape(s.name) << "\" fill=\"none\" stroke=\"" << colour
      << "\" stroke-width=\"2\" points=\"";
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      o << fmt(px(s.x[i]), 1) << "," << fmt(py(s.y[i]), 1) << " ";
    }
    o << "\"/>\n";
    for (size_t i = 0; i < s.x.size() && i < s.y.size() && s.x.size() <= 40; ++i) {
      if (!std::isfinite(s.y[i])) continue;
      o << "<circle cx=\"" << fmt(px(s.x[i]), 1) << "\" cy=\"" << fmt(py(s.y[i]), 1) << "\" r=\"2.5\" fill=\"" << colour
        << "\"/>\n";
    }
    const double ly = top + 10 + 18 * static_cast<double>(k);
    o << "<line x1=\"" << left + plot_w + 12 << "\" y1=\"" << ly << "\" x2=\"" << left + plot_w + 32 << "\" y2=\"" << ly
      << "\" stroke=\"" << colour << "\" stroke-width=\"2\"/><text x=\"" << left + plot_w + 36 << "\" y=\"" << ly + 4
      << "\" font-size=\"11\">" << escape(s.name) << "</text>\n";
  }
  o << "</svg>\n";
  return o.str();
}

namespace {

std::string figure_value(const Figure& f) {
  if (f.unit == "B") return human(f.value, "B");
  if (f.unit == "bit/s") return human(f.value, "bit/s");
  return with_commas(f.value) + " " + f.unit;
}

struct SeedRow {
  const char* key;
  const char* label;
  double seed_value;
  const char* seed_text;
};
// The seed's key-numbers table (seed/000_8aee25b0636c8ea2.txt, "KEY NUMBERS").
const SeedRow kSeedTable[] = {
    {"avg_messages_per_s", "Messages/second, average", 1.15e6, "1.15M"},
    {"peak_messages_per_s", "Messages/second, peak", 3.5e6, "3.5M"},
    {"concurrent_connections", "Concurrent connections", 100e6, "100 million"},
    {"chat_servers", "Chat servers", 2000, "~2000"},
    {"text_bytes_per_day", "Text storage per day", 2.5e12, "2.5 TB"},
    {"media_bytes_per_day", "Media storage per day", 1.25e15, "1.25 PB"},
};

}  // namespace

bool below_knee(const ModelPoint& point, const std::vector<ModelPoint>& all) {
  if (!point.measured_p99_ms || !point.measured_delivered_per_s) return false;
  const ModelPoint* lightest = nullptr;
  for (const ModelPoint& m : all)
    if (m.measured_p99_ms && (lightest == nullptr || m.offered_per_s < lightest->offered_per_s)) lightest = &m;
  return *point.measured_delivered_per_s >= 0.95 * point.offered_per_s &&
         *point.measured_p99_ms <= 3 * *lightest->measured_p99_ms;
}

double error_percent(double predicted, double measured) {
  return measured == 0 ? 0 : (predicted - measured) / measured * 100;
}

namespace {

// A side that delivered nothing in its window has no latency to compare or plot.
bool none_delivered(const std::optional<double>& delivered_per_s) { return delivered_per_s && *delivered_per_s == 0; }

// The cells after the offered rate: latency and throughput, predicted and measured, the errors,
// and the verdicts.
struct ComparisonRow {
  std::vector<std::string> cells;
};
ComparisonRow comparison_row(const ModelPoint& m, const std::vector<ModelPoint>& all) {
  auto ms = [](const std::optional<double>& v) { return v ? fmt(*v, 2) + " ms" : std::string("not measured"); };
  auto err = [](double predicted, const std::optional<double>& measured) {
    if (!measured) return std::string("-");
    const double e = error_percent(predicted, *measured);
    return (e >= 0 ? "+" : "") + fmt(e, 0) + " %";
  };
  auto rate = [](const std::optional<double>& v) { return v ? with_commas(*v) : std::string("-"); };
  // A side that delivered nothing in its window (an overloaded twin, a live rate whose
  // connections failed) has no latency: its 0 would read as a -100 % error.
  const bool predicted_none = none_delivered(m.predicted_delivered_per_s);
  const bool measured_none = none_delivered(m.measured_delivered_per_s);
  const std::string none = "none delivered";
  auto predicted = [&](double v) { return predicted_none ? none : fmt(v, 2) + " ms"; };
  auto measured_ms = [&](const std::optional<double>& v) { return measured_none ? none : ms(v); };
  auto error = [&](double p, const std::optional<double>& v) { return predicted_none || measured_none ? std::string("-") : err(p, v); };
  ComparisonRow row;
  row.cells = {predicted(m.predicted_p50_ms), measured_ms(m.measured_p50_ms), error(m.predicted_p50_ms, m.measured_p50_ms),
               predicted(m.predicted_p99_ms), measured_ms(m.measured_p99_ms), error(m.predicted_p99_ms, m.measured_p99_ms),
               rate(m.predicted_delivered_per_s), rate(m.measured_delivered_per_s)};
  const bool measured = m.measured_p50_ms && m.measured_p99_ms;
  row.cells.push_back(!measured ? "-" : below_knee(m, all) ? "yes" : "no");
  const bool met = measured && !predicted_none && !measured_none &&
                   std::fabs(error_percent(m.predicted_p50_ms, *m.measured_p50_ms)) <= kModelBarPercent &&
                   std::fabs(error_percent(m.predicted_p99_ms, *m.measured_p99_ms)) <= kModelBarPercent;
  row.cells.push_back(!measured ? "-" : met ? "yes" : "no");
  return row;
}

}  // namespace

std::string render_markdown(const Report& r) {
  const Workload& w = r.plan.workload;
  std::ostringstream o;
  o << "# Capacity plan: " << w.name << "\n\n";
  if (!w.notes.empty()) o << w.notes << "\n\n";
  o << "Cost table: " << r.cost_table_label << ".\n\n";
  o << "## The seed's key numbers, reproduced from its inputs\n\n";
  o << "| figure | seed | msgsim (seed's method) | difference | derivation |\n|---|---|---|---|---|\n";
  for (const SeedRow& row : kSeedTable) {
    const Figure* f = r.plan.find(row.key);
    if (f == nullptr) continue;
    o << "| " << row.label << " | " << row.seed_text << " | " << figure_value(*f) << " | "
      << fmt((f->value / row.seed_value - 1) * 100, 1) << "% | " << f->derivation << " |\n";
  }
  o << "\n## msgsim's own figures\n\n| figure | value | derivation |\n|---|---|---|\n";
  for (const Figure& f : r.plan.own) o << "| " << f.what << " | " << figure_value(f) << " | " << f.derivation << " |\n";
  o << "\n### Servers per role per region\n\n| role |";
  for (const Region& region : w.regions) o << " " << region.name << " (" << fmt(region.share * 100, 0) << "%) |";
  o << " cores at the peak |\n|---|";
  for (size_t i = 0; i <= w.regions.size(); ++i) o << "---|";
  o << "\n";
  for (const RoleSizing& s : r.plan.roles) {
    o << "| " << chat::to_string(s.role) << " |";
    for (uint32_t n : s.servers_per_region) o << " " << n << " |";
    o << " " << fmt(s.cores_needed, 1) << " |\n";
  }
  o << "\n## Where msgsim's figures differ from the seed's, and why\n\n";
  for (const std::string& d : r.plan.differences) o << "- " << d << "\n";
  if (!r.curves.empty()) {
    o << "\n## Latency against load per role (simulated)\n\n"
         "| role | CPU per unit | cores | capacity | knee (p99 within 3x light load) | p99 at 50% | p99 at 90% |\n"
         "|---|---|---|---|---|---|---|\n";
    for (const RoleCurve& c : r.curves) {
      auto at = [&](double u) {
        for (const LatencyPoint& p : c.points)
          if (std::fabs(p.utilisation - u) < 1e-9) return fmt(p.p99_ms, 3) + " ms";
        return std::string("-");
      };
      o << "| " << c.role << " | " << c.cost_ns << " ns | " << c.cores << " | " << with_commas(c.capacity_per_s)
        << "/s | " << fmt(c.knee_utilisation * 100, 0) << "% | " << at(0.5) << " | " << at(0.9) << " |\n";
    }
  }
  if (r.chat_slice) {
    const ChatSliceResult& s = *r.chat_slice;
    o << "\n## One chat server at the peak (simulated)\n\n"
      << s.connected << " connections; CPU " << fmt(s.utilisation * 100, 1) << "% of the cores; heartbeat p50/p99 "
      << fmt(s.heartbeat_p50_ms, 2) << "/" << fmt(s.heartbeat_p99_ms, 2) << " ms; send to ack p50/p99 "
      << fmt(s.send_p50_ms, 2) << "/" << fmt(s.send_p99_ms, 2) << " ms; delivery p50/p99 " << fmt(s.delivery_p50_ms, 2)
      << "/" << fmt(s.delivery_p99_ms, 2) << " ms (SLO " << fmt(w.delivery_slo_ms, 0) << " ms); " << s.events
      << " events, digest " << s.digest_hex << ".\n";
  }
  if (!r.storms.empty()) {
    o << "\n## Reconnect storm after a chat server crash (simulated)\n\n"
         "| setting | all back after | half back after | attempts | refused | timed out | peak connects/s | "
         "busiest survivor CPU |\n|---|---|---|---|---|---|---|---|\n";
    for (const StormResult& s : r.storms) {
      o << "| " << s.label << " | " << (s.all_back_s < 0 ? std::string("not by the horizon") : fmt(s.all_back_s, 2) + " s")
        << " | " << (s.half_back_s < 0 ? std::string("-") : fmt(s.half_back_s, 2) + " s") << " | " << s.attempts << " | "
        << s.refused << " | " << s.timed_out << " | " << with_commas(s.peak_connects_per_s) << " | "
        << fmt(s.peak_survivor_utilisation * 100, 1) << "% |\n";
    }
  }
  o << "\n## Model against reality\n\n" << r.model_note << "\n\n";
  if (!r.model.empty()) {
    o << "| offered msg/s | predicted p50 | measured p50 | error | predicted p99 | measured p99 | error | predicted msg/s "
         "| measured msg/s | below the knee | within " << fmt(kModelBarPercent, 0) << " % |\n"
         "|---|---|---|---|---|---|---|---|---|---|---|\n";
    for (const ModelPoint& m : r.model) {
      const ComparisonRow row = comparison_row(m, r.model);
      o << "| " << with_commas(m.offered_per_s);
      for (const std::string& cell : row.cells) o << " | " << cell;
      o << " |\n";
    }
  }
  o << "\nSlices simulated in " << fmt(r.slices_seconds, 1) << " s (wall clock).\n";
  return o.str();
}

std::string render_html(const Report& r) {
  const Workload& w = r.plan.workload;
  std::ostringstream o;
  o << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>msgsim capacity plan: "
    << escape(w.name) << "</title>\n<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
       "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;"
       "vertical-align:top}th{background:#f2f2f2}svg.plot{display:block;margin:1em 0;border:1px solid #eee}"
       "</style></head><body>\n";
  o << "<h1>Capacity plan: " << escape(w.name) << "</h1>\n";
  if (!w.notes.empty()) o << "<p>" << escape(w.notes) << "</p>\n";
  o << "<p>Cost table: " << escape(r.cost_table_label) << ".</p>\n";
  o << "<h2>The seed's key numbers, reproduced from its inputs</h2>\n<table><tr><th>figure</th><th>seed</th>"
       "<th>msgsim (seed's method)</th><th>difference</th><th>derivation</th></tr>\n";
  for (const SeedRow& row : kSeedTable) {
    const Figure* f = r.plan.find(row.key);
    if (f == nullptr) continue;
    o << "<tr><td>" << row.label << "</td><td>" << row.seed_text << "</td><td>" << escape(figure_value(*f)) << "</td><td>"
      << fmt((f->value / row.seed_value - 1) * 100, 1) << "%</td><td>" << escape(f->derivation) << "</td></tr>\n";
  }
  o << "</table>\n<h2>msgsim's own figures</h2>\n<table><tr><th>figure</th><th>value</th><th>derivation</th></tr>\n";
  for (const Figure& f : r.plan.own) {
    o << "<tr><td>" << escape(f.what) << "</td><td>" << escape(figure_value(f)) << "</td><td>" << escape(f.derivation)
      << "</td></tr>\n";
  }
  o << "</table>\n<h3>Servers per role per region</h3>\n<table><tr><th>role</th>";
  for (const Region& region : w.regions) o << "<th>" << escape(region.name) << "</th>";
  o << "<th>cores at the peak</th></tr>\n";
  for (const RoleSizing& s : r.plan.roles) {
    o << "<tr><td>" << chat::to_string(s.role) << "</td>";
    for (uint32_t n : s.servers_per_region) o << "<td>" << n << "</td>";
    o << "<td>" << fmt(s.cores_needed, 1) << "</td></tr>\n";
  }
  o << "</table>\n<h2>Where msgsim's figures differ, and why</h2>\n<ul>\n";
  for (const std::string& d : r.plan.differences) o << "<li>" << escape(d) << "</li>\n";
  o << "</ul>\n";

  if (!r.dau_axis.empty()) {
    std::vector<Series> series;
    for (size_t k = 0; k < r.servers_by_role.size(); ++k) series.push_back({r.servers_series_names[k], r.dau_axis, r.servers_by_role[k]});
    o << "<h2>Servers needed against DAU</h2>\n"
      << svg_line_plot("plot-servers-vs-dau", "Servers needed vs DAU", "daily active users", "servers", series, true);
  }
  if (!r.curves.empty()) {
    std::vector<Series> p50, p99;
    for (const RoleCurve& c : r.curves) {
      Series a{c.role, {}, {}}, b{c.role, {}, {}};
      for (const LatencyPoint& p : c.points) {
        a.x.push_back(p.utilisation * 100);
        a.y.push_back(p.p50_ms);
        b.x.push_back(p.utilisation * 100);
        b.y.push_back(p.p99_ms);
      }
      p50.push_back(a);
      p99.push_back(b);
    }
    o << "<h2>Latency against load, per role</h2>\n<p>Each role's server with " << w.server_cores
      << " cores, frames costing the role's mean CPU per unit of work from the cost table, offered a Poisson load "
         "as a share of its capacity; latency is the server's own (queueing plus service, no network). The knee is the "
         "highest load whose p99 stays within 3x the light-load p99.</p>\n"
      << svg_line_plot("plot-latency-p99", "p99 latency vs load per role", "offered load, % of capacity", "p99 ms", p99)
      << svg_line_plot("plot-latency-p50", "p50 latency vs load per role", "offered load, % of capacity", "p50 ms", p50);
    o << "<table><tr><th>role</th><th>CPU per unit</th><th>capacity</th><th>knee</th></tr>\n";
    for (const RoleCurve& c : r.curves) {
      o << "<tr><td>" << c.role << "</td><td>" << c.cost_ns << " ns</td><td>" << with_commas(c.capacity_per_s)
        << "/s</td><td>" << fmt(c.knee_utilisation * 100, 0) << "%</td></tr>\n";
    }
    o << "</table>\n";
  }
  if (r.chat_slice) {
    const ChatSliceResult& s = *r.chat_slice;
    o << "<h2>One chat server at the peak</h2>\n<p>" << s.connected << " connections; CPU " << fmt(s.utilisation * 100, 1)
      << "% of the cores; heartbeat p50/p99 " << fmt(s.heartbeat_p50_ms, 2) << "/" << fmt(s.heartbeat_p99_ms, 2)
      << " ms; send to ack p50/p99 " << fmt(s.send_p50_ms, 2) << "/" << fmt(s.send_p99_ms, 2) << " ms; delivery p50/p99 "
      << fmt(s.delivery_p50_ms, 2) << "/" << fmt(s.delivery_p99_ms, 2) << " ms against the " << fmt(w.delivery_slo_ms, 0)
      << " ms SLO.</p>\n";
  }
  if (!r.storms.empty()) {
    std::vector<Series> online, cpu;
    for (const StormResult& s : r.storms) {
      online.push_back({s.label, s.time_s, s.online});
      std::vector<double> percent;
      for (double u : s.survivor_utilisation) percent.push_back(u * 100);
      cpu.push_back({s.label, s.time_s, percent});
    }
    o << "<h2>Reconnect storm after a chat server crash</h2>\n"
      << svg_line_plot("plot-storm-online", "Clients back online after the crash", "seconds since the crash",
                       "clients online", online)
      << svg_line_plot("plot-storm-cpu", "Busiest survivor's CPU during the storm", "seconds since the crash",
                       "CPU %", cpu);
    o << "<table><tr><th>setting</th><th>all back after</th><th>attempts</th><th>refused</th><th>timed out</th>"
         "<th>peak connects/s</th><th>busiest survivor CPU</th></tr>\n";
    for (const StormResult& s : r.storms) {
      o << "<tr><td>" << escape(s.label) << "</td><td>"
        << (s.all_back_s < 0 ? std::string("not by the horizon") : fmt(s.all_back_s, 2) + " s") << "</td><td>" << s.attempts
        << "</td><td>" << s.refused << "</td><td>" << s.timed_out << "</td><td>" << with_commas(s.peak_connects_per_s)
        << "</td><td>" << fmt(s.peak_survivor_utilisation * 100, 1) << "%</td></tr>\n";
    }
    o << "</table>\n";
  }
  o << "<h2>Model against reality</h2>\n<p>" << escape(r.model_note) << "</p>\n";
  if (!r.model.empty()) {
    Series pred50{"predicted p50", {}, {}}, pred99{"predicted p99", {}, {}}, meas50{"measured p50", {}, {}},
        meas99{"measured p99", {}, {}};
    o << "<table><tr><th>offered msg/s</th><th>predicted p50</th><th>measured p50</th><th>error</th><th>predicted p99</th>"
         "<th>measured p99</th><th>error</th><th>predicted msg/s</th><th>measured msg/s</th><th>below the knee</th><th>within "
      << fmt(kModelBarPercent, 0) << " %</th></tr>\n";
    for (const ModelPoint& m : r.model) {
      if (!none_delivered(m.predicted_delivered_per_s)) {
        pred50.x.push_back(m.offered_per_s), pred50.y.push_back(m.predicted_p50_ms);
        pred99.x.push_back(m.offered_per_s), pred99.y.push_back(m.predicted_p99_ms);
      }
      if (!none_delivered(m.measured_delivered_per_s)) {
        if (m.measured_p50_ms) meas50.x.push_back(m.offered_per_s), meas50.y.push_back(*m.measured_p50_ms);
        if (m.measured_p99_ms) meas99.x.push_back(m.offered_per_s), meas99.y.push_back(*m.measured_p99_ms);
      }
      o << "<tr><td>" << with_commas(m.offered_per_s) << "</td>";
      for (const std::string& cell : comparison_row(m, r.model).cells) o << "<td>" << escape(cell) << "</td>";
      o << "</tr>\n";
    }
    o << "</table>\n";
    std::vector<Series> series = {pred50, pred99};
    if (!meas50.x.empty()) series.push_back(meas50);
    if (!meas99.x.empty()) series.push_back(meas99);
    o << svg_line_plot("plot-model-vs-live", "Predicted vs measured send-to-deliver latency", "offered msg/s", "ms", series);
  }
  o << "<p>Slices simulated in " << fmt(r.slices_seconds, 1) << " s (wall clock).</p>\n</body></html>\n";
  return o.str();
}

}  // namespace msgsim::reports
