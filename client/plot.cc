#include "client/plot.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/metrics_proto.h"

namespace tuneforge::cli {

std::vector<MetricRow> MetricRows(const std::vector<v1::JobEvent>& events) {
  std::map<std::pair<int64_t, bool>, MetricRow> rows;
  for (const v1::JobEvent& e : events) {
    MetricRow r;
    if (e.has_metrics()) {
      r.train = FromProto(e.metrics());
    } else if (e.has_evaluation()) {
      r.evaluation = true;
      r.eval = FromProto(e.evaluation());
    } else {
      continue;
    }
    rows[{r.step(), r.evaluation}] = r;
  }
  std::vector<MetricRow> out;
  for (auto& [key, row] : rows) out.push_back(row);
  return out;
}

std::string MetricsCsv(const std::vector<MetricRow>& rows) {
  std::string out = MetricsCsvHeader();
  for (const MetricRow& r : rows) {
    out += r.evaluation ? MetricsCsvLine(r.eval) : MetricsCsvLine(r.train);
  }
  return out;
}

namespace {

// About five round tick values covering [lo, hi]; no finer than
// `min_step` (1 for steps, which are whole).
std::vector<double> Ticks(double lo, double hi, double min_step = 0) {
  const double span = hi - lo;
  const double raw = std::max(span / 4, min_step);
  const double magnitude = std::pow(10, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    if (min_step >= 1 && std::fmod(m * magnitude, 1.0) != 0) continue;  // whole steps only
    if (m * magnitude >= raw) {
      step = m * magnitude;
      break;
    }
  }
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push_back(t);
  return ticks;
}

std::string Escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '&') out += "&amp;";
    else if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '"') out += "&quot;";
    else out += c;
  }
  return out;
}

}  // namespace

std::string LossPlotSvg(const std::string& title, const std::vector<MetricRow>& rows) {
  constexpr double kWidth = 800, kHeight = 450, kLeft = 70, kRight = 730, kTop = 50,
                   kBottom = 390;
  double step_max = 1, loss_lo = 1e300, loss_hi = -1e300, lr_hi = 0;
  for (const MetricRow& r : rows) {
    step_max = std::max(step_max, double(r.step()));
    const double loss = r.evaluation ? r.eval.validation_loss : r.train.loss;
    loss_lo = std::min(loss_lo, loss);
    loss_hi = std::max(loss_hi, loss);
    if (!r.evaluation) lr_hi = std::max(lr_hi, r.train.learning_rate);
  }
  if (loss_lo > loss_hi) loss_lo = 0, loss_hi = 1;
  if (loss_hi - loss_lo < 1e-9) loss_lo -= 0.5, loss_hi += 0.5;
  const double pad = (loss_hi - loss_lo) * 0.05;
  loss_lo -= pad;
  loss_hi += pad;
  if (lr_hi <= 0) lr_hi = 1;
  auto x = [&](double step) { return kLeft + (kRight - kLeft) * step / step_max; };
  auto y_loss = [&](double v) { return kBottom - (kBottom - kTop) * (v - loss_lo) / (loss_hi - loss_lo); };
  auto y_lr = [&](double v) { return kBottom - (kBottom - kTop) * v / lr_hi; };

  std::string svg = absl::StrFormat(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" "
      "viewBox=\"0 0 %g %g\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
      "<text x=\"%g\" y=\"20\" text-anchor=\"middle\" font-size=\"15\">%s</text>\n",
      kWidth, kHeight, kWidth, kHeight, kWidth / 2, Escape(title));
  absl::StrAppendFormat(
      &svg,
      "<g id=\"plot\" data-step-max=\"%.17g\" data-loss-min=\"%.17g\" data-loss-max=\"%.17g\" "
      "data-lr-max=\"%.17g\" data-left=\"%g\" data-right=\"%g\" data-top=\"%g\" "
      "data-bottom=\"%g\">\n"
      "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"#444\"/>\n",
      step_max, loss_lo, loss_hi, lr_hi, kLeft, kRight, kTop, kBottom, kLeft, kTop,
      kRight - kLeft, kBottom - kTop);
  for (double t : Ticks(0, step_max, 1)) {
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%.2f\" y1=\"%g\" x2=\"%.2f\" y2=\"%g\" stroke=\"#ddd\"/>"
                          "<text x=\"%.2f\" y=\"%g\" text-anchor=\"middle\">%g</text>\n",
                          x(t), kTop, x(t), kBottom, x(t), kBottom + 16, t);
  }
  for (double t : Ticks(loss_lo, loss_hi)) {
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%g\" y1=\"%.2f\" x2=\"%g\" y2=\"%.2f\" stroke=\"#ddd\"/>"
                          "<text x=\"%g\" y=\"%.2f\" text-anchor=\"end\">%g</text>\n",
                          kLeft, y_loss(t), kRight, y_loss(t), kLeft - 6, y_loss(t) + 4, t);
  }
  for (double t : Ticks(0, lr_hi)) {
    absl::StrAppendFormat(&svg, "<text x=\"%g\" y=\"%.2f\" fill=\"#888\">%.2g</text>\n",
                          kRight + 6, y_lr(t) + 4, t);
  }
  absl::StrAppendFormat(
      &svg,
      "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">step</text>\n"
      "<text transform=\"translate(18 %g) rotate(-90)\" text-anchor=\"middle\">loss</text>\n"
      "<text transform=\"translate(%g %g) rotate(90)\" text-anchor=\"middle\" "
      "fill=\"#888\">learning rate</text>\n",
      (kLeft + kRight) / 2, kBottom + 36, (kTop + kBottom) / 2, kWidth - 12, (kTop + kBottom) / 2);
  struct Series {
    const char* name;
    const char* style;
    bool evaluation;
  };
  for (const Series& s : {Series{"learning_rate", "stroke=\"#999\" stroke-dasharray=\"4 3\"", false},
                          Series{"train_loss", "stroke=\"#1f77b4\" stroke-width=\"1.5\"", false},
                          Series{"validation_loss", "stroke=\"#ff7f0e\" stroke-width=\"2\"", true}}) {
    std::string points;
    for (const MetricRow& r : rows) {
      if (r.evaluation != s.evaluation) continue;
      const double value = std::string(s.name) == "learning_rate" ? y_lr(r.train.learning_rate)
                           : s.evaluation                         ? y_loss(r.eval.validation_loss)
                                                                  : y_loss(r.train.loss);
      absl::StrAppendFormat(&points, "%s%.3f,%.3f", points.empty() ? "" : " ", x(r.step()),
                            value);
    }
    absl::StrAppendFormat(&svg, "<polyline data-series=\"%s\" fill=\"none\" %s points=\"%s\"/>\n",
                          s.name, s.style, points);
  }
  // Evaluations are few: a marker on each.
  for (const MetricRow& r : rows) {
    if (!r.evaluation) continue;
    absl::StrAppendFormat(&svg, "<circle cx=\"%.3f\" cy=\"%.3f\" r=\"3.5\" fill=\"#ff7f0e\"/>\n",
                          x(r.step()), y_loss(r.eval.validation_loss));
  }
  absl::StrAppendFormat(
      &svg,
      "<g transform=\"translate(%g %g)\">"
      "<line x1=\"0\" y1=\"0\" x2=\"24\" y2=\"0\" stroke=\"#1f77b4\" stroke-width=\"1.5\"/>"
      "<text x=\"30\" y=\"4\">train loss</text>"
      "<line x1=\"110\" y1=\"0\" x2=\"134\" y2=\"0\" stroke=\"#ff7f0e\" stroke-width=\"2\"/>"
      "<text x=\"140\" y=\"4\">validation loss</text>"
      "<line x1=\"250\" y1=\"0\" x2=\"274\" y2=\"0\" stroke=\"#999\" stroke-dasharray=\"4 3\"/>"
      "<text x=\"280\" y=\"4\">learning rate</text></g>\n"
      "</g>\n</svg>\n",
      kLeft, kTop - 14);
  return svg;
}

}  // namespace tuneforge::cli
