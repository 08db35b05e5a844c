// The agent's transfers with the scheduler: blobs fetched into the cache by
// digest (checked), base model folders built from them, a checkpoint to
// resume from, and files uploaded as the job's artifacts (skipping bytes the
// scheduler holds already).
#include <filesystem>
#include <fstream>

#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "common/blob_store.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "worker/agent.h"
#include "worker/grpc_call.h"

namespace tuneforge {

absl::StatusOr<std::string> Agent::FetchBlob(const v1::Assignment& a, const std::string& sha256) {
  if (!IsSha256Hex(sha256)) return absl::InvalidArgumentError("bad blob digest " + sha256);
  // A scheduler restarting as the job starts is waited for, not a failure
  // of the job.
  absl::StatusOr<std::string> fetched;
  (void)Retrying(
      a.job().name() + ": fetching blob " + sha256,
      [&] {
        fetched = FetchBlobOnce(a, sha256);
        return fetched.status();
      },
      [] { return false; });
  return fetched;
}

absl::StatusOr<std::string> Agent::FetchBlobOnce(const v1::Assignment& a,
                                                 const std::string& sha256) {
  std::string path = options_.cache_dir + "/" + sha256;
  if (std::filesystem::exists(path)) return path;
  grpc::ClientContext ctx;
  SetDeadline(ctx, std::chrono::minutes(30));
  v1::FetchBlobRequest req;
  req.set_sha256(sha256);
  req.set_job(a.job().name());
  req.set_lease(a.lease());
  auto reader = Stub()->FetchBlob(&ctx, req);
  std::string tmp = path + ".part." + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    Sha256 hash;
    v1::BlobChunk chunk;
    while (reader->Read(&chunk)) {
      out.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
      hash.Update(chunk.data());
    }
    grpc::Status s = reader->Finish();
    out.close();
    if (!s.ok() || !out) {
      std::filesystem::remove(tmp);
      return s.ok() ? absl::InternalError("cannot write " + tmp) : FromGrpc(s);
    }
    if (hash.HexDigest() != sha256) {
      std::filesystem::remove(tmp);
      return absl::DataLossError("fetched blob does not match its digest " + sha256);
    }
  }
  std::filesystem::rename(tmp, path);
  return path;
}

absl::StatusOr<std::string> Agent::PrepareModel(const v1::Assignment& a) {
  const v1::Model& model = a.base_model();
  const std::string id = model.name().substr(model.name().find('/') + 1);
  if (model.files().empty()) return id;  // a preset: the engine makes it from the seed
  namespace fs = std::filesystem;
  const std::string dir = options_.cache_dir + "/models/" + id;
  if (fs::exists(dir + "/.complete")) return dir;
  const std::string tmp = dir + ".part." + std::to_string(getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return absl::InternalError("cannot create " + tmp + ": " + ec.message());
  for (const v1::ModelFile& f : model.files()) {
    if (f.path().empty() || f.path().find('/') != std::string::npos || f.path()[0] == '.') {
      return absl::InvalidArgumentError("model file name '" + f.path() + "' is not a plain name");
    }
    absl::StatusOr<std::string> blob = FetchBlob(a, f.sha256());
    if (!blob.ok()) return blob.status();
    // A hard link shares the cached bytes; a copy where links do not work.
    fs::create_hard_link(*blob, tmp + "/" + f.path(), ec);
    if (ec) fs::copy_file(*blob, tmp + "/" + f.path(), ec);
    if (ec) return absl::InternalError("cannot place " + f.path() + ": " + ec.message());
  }
  std::ofstream(tmp + "/.complete") << model.name() << "\n";
  // Only complete folders are renamed into place, and renaming onto an
  // existing folder fails: when local workers race, the first one wins and
  // the others use its folder, which nobody removes while a job reads it.
  fs::rename(tmp, dir, ec);
  if (ec) {
    fs::remove_all(tmp, ec);
    if (fs::exists(dir + "/.complete")) return dir;
    return absl::InternalError("cannot move " + tmp + " to " + dir);
  }
  return dir;
}

absl::Status Agent::UploadFile(const v1::Assignment& a, const std::string& path,
                               const std::string& artifact) {
  // Two passes over the file, a chunk at a time: the digest first (it goes
  // in the header), then the bytes, unless the scheduler has them already.
  constexpr size_t kChunk = 1 << 20;
  std::string chunk(kChunk, '\0');
  auto read_chunk = [&](std::ifstream& in) {
    in.read(chunk.data(), static_cast<std::streamsize>(kChunk));
    return static_cast<size_t>(in.gcount());
  };
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InternalError("cannot open " + path);
  Sha256 hash;
  int64_t size = 0;
  for (size_t n; (n = read_chunk(in)) > 0; size += static_cast<int64_t>(n)) {
    hash.Update(std::string_view(chunk.data(), n));
  }
  if (in.bad()) return absl::InternalError("cannot read " + path);
  in.clear();
  in.seekg(0);
  grpc::ClientContext ctx;
  SetDeadline(ctx, std::chrono::minutes(30));
  v1::UploadArtifactResponse resp;
  auto writer = Stub()->UploadArtifact(&ctx, &resp);
  v1::UploadArtifactRequest req;
  v1::UploadArtifactRequest::Header* h = req.mutable_header();
  h->set_job(a.job().name());
  h->set_lease(a.lease());
  h->set_artifact(artifact);
  h->set_size_bytes(size);
  h->set_sha256(hash.HexDigest());
  // A write fails once the server has ended the call (it holds the bytes,
  // or refused the header); Finish says which.
  bool ok = writer->Write(req);
  for (size_t n; ok && (n = read_chunk(in)) > 0;) {
    req.set_chunk(chunk.data(), n);
    ok = writer->Write(req);
  }
  writer->WritesDone();
  return FromGrpc(writer->Finish());
}

absl::Status Agent::UploadFolder(const v1::Assignment& a, const std::string& dir,
                                 const std::string& prefix) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file()) continue;
    RETURN_IF_ERROR(UploadFile(a, entry.path().string(), prefix + entry.path().filename().string()));
  }
  if (ec) return absl::InternalError("cannot list " + dir + ": " + ec.message());
  return absl::OkStatus();
}

absl::Status Agent::FetchCheckpoint(const v1::Assignment& a, const std::string& checkpoints,
                                    const std::string& metrics) {
  namespace fs = std::filesystem;
  const std::string& name = a.resume_checkpoint();
  if (!name.empty() && (name.size() != 13 || name.rfind("step-", 0) != 0 ||
                        name.find_first_not_of("0123456789", 5) != std::string::npos)) {
    return absl::InvalidArgumentError("resume checkpoint '" + name + "' is not step-NNNNNNNN");
  }
  // The scheduler's checkpoint is the one to resume from: a newer one an
  // earlier attempt left on this host was never reported whole (the events
  // of its last steps may be lost), so it goes, and those steps run again.
  // Names are zero-padded: they compare as their steps do.
  std::error_code ec;
  bool have = false;
  std::vector<fs::path> newer;
  for (const fs::directory_entry& e : fs::directory_iterator(checkpoints, ec)) {
    const std::string local = e.path().filename().string();
    if (local.rfind("step-", 0) != 0) continue;
    if (local > name) newer.push_back(e.path());
    have = have || (local == name && fs::exists(e.path() / "trainer_state.json"));
  }
  for (const fs::path& p : newer) fs::remove_all(p, ec);
  if (name.empty() || have) return absl::OkStatus();
  const std::string tmp = checkpoints + "/" + name + ".fetch";
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return absl::InternalError("cannot create " + tmp + ": " + ec.message());
  for (const v1::ModelFile& f : a.resume_checkpoint_files()) {
    if (f.path().empty() || f.path().find('/') != std::string::npos || f.path()[0] == '.') {
      return absl::InvalidArgumentError("checkpoint file name '" + f.path() + "' is not a plain name");
    }
    ASSIGN_OR_RETURN(std::string blob, FetchBlob(a, f.sha256()));
    const std::string into = f.path() == "metrics.csv" ? metrics : tmp + "/" + f.path();
    fs::remove(into, ec);
    fs::copy_file(blob, into, ec);
    if (ec) return absl::InternalError("cannot place " + f.path() + ": " + ec.message());
  }
  if (!fs::exists(tmp + "/trainer_state.json")) {
    return absl::DataLossError("checkpoint " + name + " has no trainer_state.json");
  }
  fs::rename(tmp, checkpoints + "/" + name, ec);
  if (ec) return absl::InternalError("cannot move " + tmp + ": " + ec.message());
  return absl::OkStatus();
}

}  // namespace tuneforge
