// Read-only views of one parsed JSON value, with the same small interface
// over two parsers, so the dataset checks are written once:
//   SimdjsonView  simdjson's DOM: the fast path of uploads (~5x nlohmann)
//   NlohmannView  nlohmann/json: for builds without simdjson (the
//                 libtorch-only engine build), and for tests
//
//   template <class V> bool Check(const V& record) {
//     auto prompt = record.Find("prompt");  // std::optional<V>
//     return prompt && prompt->IsString();
//   }
//
// A view borrows its parser's document: it lives no longer than the parse.
#ifndef TUNEFORGE_COMMON_JSON_VIEW_H_
#define TUNEFORGE_COMMON_JSON_VIEW_H_

#include <optional>
#include <string_view>

#include <nlohmann/json.hpp>

#if TUNEFORGE_HAVE_SIMDJSON
#include <simdjson.h>
#endif

namespace tuneforge {

class NlohmannView {
 public:
  explicit NlohmannView(const nlohmann::json& v) : v_(&v) {}
  bool IsObject() const { return v_->is_object(); }
  bool IsArray() const { return v_->is_array(); }
  bool IsString() const { return v_->is_string(); }
  bool IsNumber() const { return v_->is_number(); }
  const char* TypeName() const { return v_->type_name(); }
  std::optional<NlohmannView> Find(std::string_view key) const {
    auto it = v_->find(key);
    if (it == v_->end()) return std::nullopt;
    return NlohmannView(*it);
  }
  template <typename F>
  void ForEachKey(F f) const {
    for (const auto& item : v_->items()) f(std::string_view(item.key()));
  }
  size_t Size() const { return v_->size(); }
  NlohmannView At(size_t i) const { return NlohmannView((*v_)[i]); }
  std::string_view String() const { return v_->get_ref<const std::string&>(); }
  double Number() const { return v_->get<double>(); }

 private:
  const nlohmann::json* v_;
};

#if TUNEFORGE_HAVE_SIMDJSON
class SimdjsonView {
 public:
  explicit SimdjsonView(simdjson::dom::element v) : v_(v) {}
  bool IsObject() const { return v_.is_object(); }
  bool IsArray() const { return v_.is_array(); }
  bool IsString() const { return v_.is_string(); }
  bool IsNumber() const { return v_.is_number(); }
  const char* TypeName() const {
    switch (v_.type()) {
      case simdjson::dom::element_type::ARRAY: return "array";
      case simdjson::dom::element_type::OBJECT: return "object";
      case simdjson::dom::element_type::STRING: return "string";
      case simdjson::dom::element_type::BOOL: return "boolean";
      case simdjson::dom::element_type::NULL_VALUE: return "null";
      default: return "number";
    }
  }
  std::optional<SimdjsonView> Find(std::string_view key) const {
    simdjson::dom::element found;
    if (v_[key].get(found) != simdjson::SUCCESS) return std::nullopt;
    return SimdjsonView(found);
  }
  template <typename F>
  void ForEachKey(F f) const {
    for (auto field : simdjson::dom::object(v_)) f(field.key);
  }
  size_t Size() const { return simdjson::dom::array(v_).size(); }
  SimdjsonView At(size_t i) const { return SimdjsonView(simdjson::dom::array(v_).at(i).value()); }
  std::string_view String() const { return std::string_view(v_); }
  double Number() const {
    double d = 0;
    if (v_.get_double().get(d) == simdjson::SUCCESS) return d;
    int64_t i = 0;
    if (v_.get_int64().get(i) == simdjson::SUCCESS) return static_cast<double>(i);
    uint64_t u = 0;
    if (v_.get_uint64().get(u) != simdjson::SUCCESS) return 0;
    return static_cast<double>(u);
  }

 private:
  simdjson::dom::element v_;
};
#endif

}  // namespace tuneforge

#endif  // TUNEFORGE_COMMON_JSON_VIEW_H_
