// `tuneforge models ...`: list, import (a Hugging Face folder), get and
// delete base models.
#include <iostream>
#include <memory>
#include <string>

#include "client/commands.h"
#include "client/format.h"
#include "client/output.h"
#include "client/transfer.h"

namespace tuneforge::cli {
namespace {

// What the models subcommands parse into; the callbacks keep it alive.
struct ModelFlags {
  std::string dir, display_name, id;
};

int ListModels(ApiClient& api, const std::string& output) {
  v1::ListModelsRequest req;
  req.set_page_size(1000);
  v1::ListModelsResponse resp;
  if (int code = api.ListModels(req, &resp); code != 0) return code;
  PrintList(output, resp, resp.models(), ModelRow, kModelColumns);
  return 0;
}

int GetModel(ApiClient& api, const std::string& output, const std::string& id) {
  v1::GetModelRequest req;
  req.set_name(Name("models", id));
  v1::Model m;
  if (int code = api.GetModel(req, &m); code != 0) return code;
  Print(output, m, ModelSummary(m), m.name());
  return 0;
}

int DeleteModel(ApiClient& api, const std::string& output, const std::string& id) {
  v1::DeleteModelRequest req;
  req.set_name(Name("models", id));
  v1::DeleteModelResponse resp;
  if (int code = api.DeleteModel(req, &resp); code != 0) return code;
  if (output == "text") std::cout << "deleted " << req.name() << "\n";
  return 0;
}

}  // namespace

void AddModelCommands(CLI::App& app, Globals& g, int& code) {
  auto f = std::make_shared<ModelFlags>();
  CLI::App* models = app.add_subcommand("models", "import, list and delete base models");
  models->require_subcommand(1);
  models->add_subcommand("list", "list models: presets, imported, fine-tuned")
      ->callback(RunWithClient(g, code,
                               [&g](ApiClient& api) { return ListModels(api, g.output); }));
  CLI::App* import = models->add_subcommand(
      "import", "import a Hugging Face model folder (config.json, *.safetensors, tokenizer)");
  import->add_option("DIR", f->dir)->required()->check(CLI::ExistingDirectory);
  import->add_option("--display-name", f->display_name, "default: the folder's name");
  import->callback(RunWithClient(g, code, [&g, f](ApiClient& api) {
    return ImportModel(api, g.output, f->dir, f->display_name);
  }));
  CLI::App* get = models->add_subcommand("get", "show a model");
  get->add_option("NAME", f->id)->required();
  get->callback(RunWithClient(
      g, code, [&g, f](ApiClient& api) { return GetModel(api, g.output, f->id); }));
  CLI::App* del = models->add_subcommand("delete", "delete a model no job still uses");
  del->add_option("NAME", f->id)->required();
  del->callback(RunWithClient(
      g, code, [&g, f](ApiClient& api) { return DeleteModel(api, g.output, f->id); }));
}

}  // namespace tuneforge::cli
