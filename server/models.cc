#include "server/models.h"

#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/blob_reclaimer.h"
#include "server/model_check.h"
#include "server/clock.h"
#include "server/ids.h"

namespace tuneforge {
namespace {

constexpr std::string_view kModelArtifact = "model/";

}  // namespace

ModelRecord PresetRecord(const Preset& p) {
  ModelRecord m;
  m.id = p.name;
  m.display_name = p.description;
  m.source = ModelSource::kPreset;
  m.model_type = p.config.model_type;
  m.architecture = ArchitectureName(p.config.architecture);
  m.parameter_count = ParameterCount(p.config);
  m.context_length = p.config.context_length;
  m.vocab_size = p.config.vocab_size;
  m.dtype = "F32";
  m.tokenizer = "byte-level BPE, 258 tokens, 0 merges";
  return m;
}

absl::Status ModelImport::BeginFile(const std::string& path, int64_t size_bytes,
                                    const std::string& sha256) {
  RETURN_IF_ERROR(EndFile());
  if (!IsModelFileName(path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "file.path: '", path, "' is not a model file (config.json, model.safetensors, "
        "model-NNNNN-of-NNNNN.safetensors, model.safetensors.index.json, tokenizer files)"));
  }
  for (const File& f : files_) {
    if (f.record.path == path) {
      return absl::InvalidArgumentError(absl::StrCat("file.path: ", path, " is sent twice"));
    }
  }
  if (files_.size() >= kMaxFiles) {
    return absl::InvalidArgumentError(absl::StrCat("a model has at most ", kMaxFiles, " files"));
  }
  if (size_bytes < 0) return absl::InvalidArgumentError("file.size_bytes: negative");
  if (MaxModelFileBytes(path) > 0 && size_bytes > MaxModelFileBytes(path)) {
    return absl::InvalidArgumentError(absl::StrCat("file.size_bytes: a ", path, " may be at most ",
                                                   MaxModelFileBytes(path), " bytes"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<BlobWriter> writer, catalog_->blobs_->NewWriter());
  files_.push_back({{path, sha256, size_bytes}, std::move(writer)});
  return absl::OkStatus();
}

absl::Status ModelImport::Append(std::string_view chunk) {
  if (files_.empty() || files_.back().writer->sealed()) {
    return absl::InvalidArgumentError("a chunk came before any file header");
  }
  File& file = files_.back();
  const int64_t limit = MaxModelFileBytes(file.record.path);
  if (limit > 0 && file.writer->size() + static_cast<int64_t>(chunk.size()) > limit) {
    return absl::InvalidArgumentError(absl::StrCat(file.record.path, ": a ", file.record.path,
                                                   " may be at most ", limit, " bytes"));
  }
  const int64_t n = static_cast<int64_t>(chunk.size());
  if (total_bytes_ + n > room_.bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the model is larger than ", room_.why, "; nothing was stored"));
  }
  RETURN_IF_ERROR(catalog_->ledger_->Hold(record_.tenant, n, tenant_));
  total_bytes_ += n;
  return file.writer->Append(chunk);
}

ModelImport::~ModelImport() { catalog_->ledger_->Release(record_.tenant, 1, total_bytes_); }

absl::Status ModelImport::EndFile() {
  if (files_.empty() || files_.back().writer->sealed()) return absl::OkStatus();
  File& f = files_.back();
  if (f.record.size_bytes > 0 && f.writer->size() != f.record.size_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(f.record.path, ": received ", f.writer->size(),
                                                   " bytes, the header said ",
                                                   f.record.size_bytes));
  }
  absl::StatusOr<std::string> sha = f.writer->Seal(f.record.sha256);
  if (!sha.ok()) {
    return absl::Status(sha.status().code(), absl::StrCat(f.record.path, ": ", sha.status().message()));
  }
  f.record.sha256 = *sha;
  f.record.size_bytes = f.writer->size();
  return absl::OkStatus();
}

absl::StatusOr<ModelRecord> ModelImport::Finish() {
  RETURN_IF_ERROR(EndFile());
  std::vector<FileRecord> files;
  std::map<std::string, std::string> paths;
  std::vector<std::unique_ptr<BlobWriter>> writers;
  for (File& f : files_) {
    files.push_back(f.record);
    paths[f.record.path] = f.writer->temp_path();
    writers.push_back(std::move(f.writer));
  }
  files_.clear();
  return catalog_->Register(record_, files, paths, std::move(writers));
}

absl::StatusOr<std::unique_ptr<ModelImport>> ModelCatalog::StartImport(
    const std::string& display_name, const std::string& tenant) {
  // One reading of the tenant's usage: what its quota leaves for all of its
  // uploads in progress, and for this import the tighter of that and the
  // server's limit.
  ASSIGN_OR_RETURN(Room quota, tuneforge::RoomFor(store_, quota_, tenant, /*new_dataset=*/false,
                                                  Room{INT64_MAX, ""}));
  Room room = Tighter(ServerLimit(), quota);
  ModelRecord record;
  record.id = "m" + NewId().substr(1);
  record.tenant = tenant;
  record.display_name = display_name;
  record.source = ModelSource::kImported;
  RETURN_IF_ERROR(ledger_->Open(tenant));
  return std::unique_ptr<ModelImport>(
      new ModelImport(this, std::move(record), std::move(room), std::move(quota)));
}

Room ModelCatalog::ServerLimit() const {
  return {max_model_bytes_,
          absl::StrCat("this server's limit of ", max_model_bytes_, " bytes (--max-model-bytes)")};
}

absl::StatusOr<Room> ModelCatalog::RoomFor(const std::string& tenant) {
  return tuneforge::RoomFor(store_, quota_, tenant, /*new_dataset=*/false, ServerLimit());
}

absl::StatusOr<ModelRecord> ModelCatalog::Register(
    ModelRecord record, const std::vector<FileRecord>& files,
    const std::map<std::string, std::string>& paths,
    std::vector<std::unique_ptr<BlobWriter>> writers) {
  ASSIGN_OR_RETURN(ModelRecord checked, CheckModelFolder(paths));
  checked.id = record.id;
  checked.tenant = record.tenant;
  checked.display_name = record.display_name;
  checked.source = record.source;
  checked.source_job = record.source_job;
  checked.base_model = record.base_model;
  checked.files = files;
  for (const FileRecord& f : files) checked.size_bytes += f.size_bytes;
  checked.create_time_ms = NowMs();
  MutexLock lock(&store_->blob_refs_mu());
  if (checked.source == ModelSource::kImported) {
    // Imports running side by side each saw the quota with room to spare. A
    // model a job trained is kept whatever it costs: the hours are spent.
    ASSIGN_OR_RETURN(Room room, RoomFor(checked.tenant));
    if (checked.size_bytes > room.bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the model is larger than ", room.why, "; nothing was stored"));
    }
  }
  absl::Status s;
  for (auto& writer : writers) {
    if (s = writer->Publish(); !s.ok()) break;
  }
  for (const FileRecord& f : files) {
    if (s.ok() && !blobs_->Contains(f.sha256)) {
      s = absl::FailedPreconditionError(
          absl::StrCat(f.path, ": its blob ", f.sha256, " is gone; upload it again"));
    }
  }
  if (s.ok()) s = store_->PutModel(checked);
  if (!s.ok()) {  // what this call published goes again: nothing is orphaned
    for (const auto& writer : writers) {
      if (writer->sealed()) (void)RemoveIfUnreferenced(store_, blobs_, writer->sha256());
    }
    return s;
  }
  return checked;
}

absl::StatusOr<ModelRecord> ModelCatalog::Get(const std::string& id, const Scope& scope) {
  if (const Preset* p = FindPreset(id)) return PresetRecord(*p);
  return store_->GetModel(id, scope.ListFilter());
}

absl::StatusOr<std::vector<ModelRecord>> ModelCatalog::List(const Scope& scope,
                                                            const std::string& after_id,
                                                            int limit) {
  std::vector<ModelRecord> out;
  const std::vector<Preset>& presets = Presets();
  // Where to go on: the first preset, the one after `after_id`, or (after a
  // stored model) past all of them.
  size_t next_preset = after_id.empty() ? 0 : presets.size();
  for (size_t i = 0; i < presets.size(); ++i) {
    if (presets[i].name == after_id) next_preset = i + 1;
  }
  for (size_t i = next_preset; i < presets.size() && static_cast<int>(out.size()) < limit; ++i) {
    out.push_back(PresetRecord(presets[i]));
  }
  if (static_cast<int>(out.size()) == limit) return out;
  const std::string stored_after = FindPreset(after_id) ? "" : after_id;
  ASSIGN_OR_RETURN(std::vector<ModelRecord> stored,
                   store_->ListModels(scope.ListFilter(), stored_after,
                                      limit - static_cast<int>(out.size())));
  for (ModelRecord& m : stored) out.push_back(std::move(m));
  return out;
}

absl::Status ModelCatalog::Delete(const std::string& id, const Scope& scope) {
  if (FindPreset(id)) {
    return absl::FailedPreconditionError(
        absl::StrCat("model ", id, " is built in and cannot be deleted"));
  }
  ASSIGN_OR_RETURN(ModelRecord m, Get(id, scope));
  ASSIGN_OR_RETURN(bool in_use, store_->ModelInUse(id));
  if (in_use) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model ", id, " is the base of a queued, running or paused job; cancel it first"));
  }
  MutexLock lock(&store_->blob_refs_mu());
  RETURN_IF_ERROR(store_->DeleteModel(id));
  std::set<std::string> digests;
  for (const FileRecord& f : m.files) digests.insert(f.sha256);
  for (const std::string& sha : digests) {
    ASSIGN_OR_RETURN(int64_t users, store_->CountBlobReferences(sha));
    if (users == 0) RETURN_IF_ERROR(blobs_->Remove(sha));
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelRecord> ModelCatalog::CreateFromJob(const Job& job) {
  ModelRecord record;
  record.id = "ft-" + job.id;
  record.tenant = job.tenant;
  record.display_name = job.spec.suffix.empty()
                            ? absl::StrCat(job.spec.base_model, " fine-tuned by job ", job.id)
                            : job.spec.suffix;
  record.source = ModelSource::kJob;
  record.source_job = job.id;
  record.base_model = job.spec.base_model;
  std::vector<FileRecord> files;
  std::map<std::string, std::string> paths;
  for (const FileRecord& a : job.artifacts) {
    if (a.path.compare(0, kModelArtifact.size(), kModelArtifact) != 0) continue;
    FileRecord f = a;
    f.path = a.path.substr(kModelArtifact.size());
    paths[f.path] = blobs_->PathOf(f.sha256);
    files.push_back(std::move(f));
  }
  if (files.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job.id, " uploaded no model files (model/...)"));
  }
  return Register(std::move(record), files, paths, {});
}

}  // namespace tuneforge
