#include "client/transfer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/format.h"
#include "client/output.h"
#include "common/model_config.h"
#include "common/sha256.h"

namespace tuneforge::cli {
namespace {

std::string FileSha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  Sha256 hash;
  std::string buffer(kChunkBytes, '\0');
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    hash.Update(std::string_view(buffer.data(), static_cast<size_t>(in.gcount())));
  }
  return hash.HexDigest();
}

// A one-line progress bar on standard error, drawn only on a terminal.
class Progress {
 public:
  Progress(const char* what, int64_t total)
      : what_(what), total_(total), on_(isatty(2) && std::getenv("NO_COLOR") == nullptr),
        start_(std::chrono::steady_clock::now()) {}
  void Update(int64_t done) {
    if (!on_ || total_ <= 0) return;
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const int width = 30;
    const int filled = static_cast<int>(width * done / total_);
    std::fprintf(stderr, "\r%s [%s%s] %3d%%  %.1f MB/s", what_,
                 std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                 static_cast<int>(100 * done / total_), s > 0 ? done / s / 1e6 : 0.0);
  }
  void Done() {
    if (on_) std::fprintf(stderr, "\n");
  }

 private:
  const char* what_;
  int64_t total_;
  bool on_;
  std::chrono::steady_clock::time_point start_;
};

// What an upload or a remote validation announces about a file.
v1::UploadDatasetMetadata MetadataFor(const std::string& path, const std::string& name,
                                      int64_t size, const UploadOptions& o) {
  v1::UploadDatasetMetadata m;
  m.set_display_name(name.empty() ? path.substr(path.find_last_of('/') + 1) : name);
  m.set_format(FormatFor(path, o.format));
  m.set_size_bytes(size);
  m.set_separator(o.separator);
  m.set_max_seq_len(o.max_seq_len);
  if (!o.model.empty()) m.set_model("models/" + o.model.substr(o.model.rfind('/') + 1));
  return m;
}

// A stream of a whole file gets at least 1 MiB/s, and ten minutes besides.
std::chrono::seconds StreamTimeout(const v1::UploadDatasetMetadata& m) {
  return std::chrono::seconds(600 + m.size_bytes() / (1 << 20));
}

// Writes metadata, then the file from metadata.offset, and ends the stream.
grpc::Status Stream(grpc::ClientWriter<v1::UploadDatasetRequest>* writer, std::ifstream& in,
                    const v1::UploadDatasetMetadata& m) {
  v1::UploadDatasetRequest req;
  *req.mutable_metadata() = m;
  bool ok = writer->Write(req);
  in.clear();
  in.seekg(m.offset());
  Progress progress("uploading", m.size_bytes());
  std::string buffer(kChunkBytes, '\0');
  int64_t sent = m.offset();
  while (ok && in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const auto n = static_cast<size_t>(in.gcount());
    if (n == 0) break;
    v1::UploadDatasetRequest chunk;
    chunk.set_chunk(buffer.substr(0, n));
    ok = writer->Write(chunk);
    sent += static_cast<int64_t>(n);
    progress.Update(sent);
  }
  progress.Done();
  writer->WritesDone();
  return writer->Finish();
}

// One UploadDataset stream: metadata, then the file from metadata.offset.
grpc::Status SendFrom(ApiClient& api, std::ifstream& in, const v1::UploadDatasetMetadata& m,
                      v1::Dataset* dataset) {
  auto ctx = CallContext(StreamTimeout(m));
  auto writer = api.UploadDataset(ctx.get(), dataset);
  return Stream(writer.get(), in, m);
}

}  // namespace

// .txt and .md files are plain text unless a format is given.
v1::DatasetFormat FormatFor(const std::string& path, const std::string& format) {
  if (format == "prompt_completion") return v1::DATASET_FORMAT_PROMPT_COMPLETION;
  if (format == "chat") return v1::DATASET_FORMAT_CHAT;
  if (format == "text") return v1::DATASET_FORMAT_TEXT;
  for (const char* ext : {".txt", ".md"}) {
    const std::string e = ext;
    if (path.size() > e.size() && path.compare(path.size() - e.size(), e.size(), e) == 0) {
      return v1::DATASET_FORMAT_TEXT;
    }
  }
  return v1::DATASET_FORMAT_UNSPECIFIED;
}

// Streams a file up, resumably: the upload is named by --upload-id or by the
// file's digest, so after a dropped connection (retried here) or a killed
// CLI (run the same command again) only the missing bytes are sent.
int UploadDataset(ApiClient& api, const std::string& output, const std::string& path,
                  const std::string& name, const UploadOptions& o) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) {
    std::fprintf(stderr, "tuneforge: cannot read %s\n", path.c_str());
    return 2;
  }
  const int64_t size = in.tellg();
  v1::UploadDatasetMetadata m = MetadataFor(path, name, size, o);
  m.set_sha256(FileSha256(path));
  m.set_upload_id(o.upload_id.empty() ? m.sha256().substr(0, 32) : o.upload_id);

  grpc::Status s;
  v1::Dataset dataset;
  for (int attempt = 0; attempt < 6; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::seconds(attempt));
    int64_t offset = 0;
    v1::QueryUploadRequest query;
    query.set_upload_id(m.upload_id());
    v1::QueryUploadResponse pending;
    if (api.QueryUpload(query, &pending) == 0 && pending.size_bytes() == size &&
        pending.committed_size() > 0) {
      offset = pending.committed_size();
      std::fprintf(stderr, "tuneforge: resuming upload %s at byte %lld of %lld\n",
                   m.upload_id().c_str(), static_cast<long long>(offset),
                   static_cast<long long>(size));
    }
    m.set_offset(offset);
    s = SendFrom(api, in, m, &dataset);
    const bool dropped = s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                         (s.error_code() == grpc::StatusCode::CANCELLED &&
                          s.error_message().find("resume") != std::string::npos);
    if (!dropped) break;
    std::fprintf(stderr, "tuneforge: upload interrupted (%s); retrying\n",
                 s.error_message().c_str());
  }
  if (!s.ok()) return ReportFailure(s);
  Print(output, dataset, DatasetSummary(dataset) + ReportProblems(dataset.report()),
        dataset.name());
  return dataset.state() == v1::DATASET_STATE_READY ? 0 : 1;
}

int ValidateRemotely(ApiClient& api, const std::string& output, const std::string& path,
                     const UploadOptions& o) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) {
    std::fprintf(stderr, "tuneforge: cannot read %s\n", path.c_str());
    return 2;
  }
  v1::UploadDatasetMetadata m = MetadataFor(path, "", in.tellg(), o);
  auto ctx = CallContext(StreamTimeout(m));
  v1::ValidateDatasetResponse resp;
  auto writer = api.ValidateDataset(ctx.get(), &resp);
  grpc::Status s = Stream(writer.get(), in, m);
  if (!s.ok()) return ReportFailure(s);
  const v1::ValidationReport& report = resp.report();
  Print(output, resp,
        path + (report.error_count() > 0 ? "  INVALID\n" : "  OK\n") + ReportSummary(report) +
            ReportProblems(report));
  return report.error_count() > 0 ? 1 : 0;
}

// Streams a Hugging Face model folder: the files the server stores (config,
// weights, tokenizer); others (README.md, *.bin) are skipped.
int ImportModel(ApiClient& api, const std::string& output, const std::string& dir,
                const std::string& display_name) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    if (!e.is_regular_file()) continue;
    const std::string file = e.path().filename().string();
    if (IsModelFileName(file)) {
      files.push_back(e.path());
    } else if (file[0] != '.') {
      std::fprintf(stderr, "tuneforge: skipping %s (not a model file)\n", file.c_str());
    }
  }
  if (ec) {
    std::fprintf(stderr, "tuneforge: cannot read %s: %s\n", dir.c_str(), ec.message().c_str());
    return 2;
  }
  std::sort(files.begin(), files.end());
  auto ctx = CallContext(std::chrono::hours(24));
  v1::Model model;
  auto writer = api.ImportModel(ctx.get(), &model);
  v1::ImportModelRequest req;
  std::string folder = fs::path(dir).lexically_normal().filename().string();
  if (folder.empty()) folder = fs::path(dir).lexically_normal().parent_path().filename().string();
  req.mutable_metadata()->set_display_name(display_name.empty() ? folder : display_name);
  bool ok = writer->Write(req);
  std::vector<char> buffer(kChunkBytes);
  for (const fs::path& path : files) {
    if (!ok) break;
    v1::ImportModelRequest::FileHeader* h = req.mutable_file();
    h->set_path(path.filename().string());
    h->set_size_bytes(static_cast<int64_t>(fs::file_size(path, ec)));
    h->set_sha256(FileSha256(path.string()));
    ok = writer->Write(req);
    std::ifstream in(path, std::ios::binary);
    while (ok && in) {
      in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      if (in.gcount() == 0) break;
      req.set_chunk(buffer.data(), static_cast<size_t>(in.gcount()));
      ok = writer->Write(req);
    }
  }
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  if (!s.ok()) return ReportFailure(s);
  Print(output, model, ModelSummary(model), model.name());
  return 0;
}

// Each file is checked against its digest and moved into place only then,
// so an interrupted download leaves no file that looks whole.
int DownloadArtifacts(ApiClient& api, const std::string& output, const std::string& job_name,
                      const std::string& which, const std::string& dir) {
  v1::GetJobRequest get;
  get.set_name(job_name);
  v1::Job job;
  if (int code = api.GetJob(get, &job); code != 0) return code;
  const std::map<std::string, std::string> prefixes = {
      {"model", "model/"}, {"adapter", "adapter/"}, {"metrics", "metrics.csv"},
      {"manifest", "manifest.json"}, {"tensorboard", "tensorboard/"}, {"all", ""}};
  auto prefix = prefixes.find(which);
  if (prefix == prefixes.end()) {
    std::fprintf(stderr, "tuneforge: --artifact is model, adapter, metrics, manifest or all\n");
    return 2;
  }
  std::vector<const v1::Artifact*> files;
  int64_t total = 0;
  for (const v1::Artifact& a : job.artifacts()) {
    if (a.path().rfind(prefix->second, 0) != 0) continue;
    files.push_back(&a);
    total += a.size_bytes();
  }
  if (files.empty()) {
    std::fprintf(stderr, "tuneforge: %s has no %s artifacts (it is %s)\n", job.name().c_str(),
                 which.c_str(), StateName(job.state()).c_str());
    return 4;
  }
  Progress progress("downloading", total);
  int64_t done = 0;
  std::vector<std::string> written;
  for (const v1::Artifact* a : files) {
    // Names come from the server: never let one leave `dir`.
    const std::filesystem::path relative(a->path());
    if (relative.empty() || relative.is_absolute() ||
        std::any_of(relative.begin(), relative.end(), [](const auto& p) { return p == ".."; })) {
      std::fprintf(stderr, "tuneforge: the server named an artifact '%s'; not written\n",
                   a->path().c_str());
      return 1;
    }
    // A group's files land in `dir` itself; "all" keeps their folders.
    const std::string local =
        dir + "/" + (which == "all" || prefix->second.back() != '/'
                         ? a->path()
                         : a->path().substr(prefix->second.size()));
    std::filesystem::create_directories(std::filesystem::path(local).parent_path());
    const std::string tmp = local + ".part";
    v1::DownloadArtifactRequest req;
    req.set_name(job.name());
    req.set_artifact(a->path());
    auto ctx = CallContext(std::chrono::hours(2));
    auto reader = api.DownloadArtifact(ctx.get(), req);
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    Sha256 hash;
    v1::ArtifactChunk chunk;
    while (reader->Read(&chunk)) {
      out.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
      hash.Update(chunk.data());
      progress.Update(done += static_cast<int64_t>(chunk.data().size()));
    }
    out.close();
    const grpc::Status s = reader->Finish();
    if (!s.ok() || !out || hash.HexDigest() != a->sha256()) {
      std::filesystem::remove(tmp);
      progress.Done();
      if (!s.ok()) return ReportFailure(s);
      std::fprintf(stderr, "tuneforge: %s: %s\n", a->path().c_str(),
                   out ? "the bytes do not match the artifact's digest" : "cannot write it");
      return 1;
    }
    std::filesystem::rename(tmp, local);
    written.push_back(local);
  }
  progress.Done();
  if (output == "json") {
    std::cout << nlohmann::json(written).dump(2) << "\n";
  } else if (output == "yaml") {
    for (const std::string& w : written) std::cout << "- " << nlohmann::json(w).dump() << "\n";
  } else {
    for (const std::string& w : written) std::cout << w << "\n";
  }
  return 0;
}

}  // namespace tuneforge::cli
