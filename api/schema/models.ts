// GraphQL SDL of the models module: the model registry, the production alias and live predictions.
// Every type, field, argument and enum value is described (test/api/schema-lint.test.ts lints it).
export const modelsTypeDefs = /* GraphQL */ `
  "The prediction for one input sample."
  type ClassPrediction {
    "The predicted class: the index (from 0) of the highest probability, e.g. the digit for MNIST."
    label: Int!
    "The label's class name from the version's recorded class names (an ONNX version's capstan-model.json labels, e.g. 7 or cat); null when the version records none (tfjs layers versions)."
    className: String
    "The model's probability of every class, in class order (index = class); they sum to about 1."
    probabilities: [Float!]!
  }

  "How the numbers sent to predict relate to what the model takes."
  enum InputEncoding {
    "As the model takes them, normalised the way its data prep normalised the training data (e.g. MNIST pixels in 0–1). The default."
    NORMALIZED
    "Raw values, normalised by the server with the normalisation the version recorded (e.g. MNIST pixels in 0–255, scaled by 1/255). Versions registered without an input spec refuse it (BAD_INPUT)."
    RAW
  }

  "The answer to predict: one prediction per input sample, in input order."
  type Prediction {
    "The model name asked for."
    model: String!
    "The registry version that answered (the one served when the request started)."
    version: Int!
    "One per input sample, in the same order."
    predictions: [ClassPrediction!]!
  }

  "How a model version's files are stored, which decides the runtime that serves it."
  enum ModelFormat {
    "A TensorFlow.js layers folder (model.json + weight shards), served with TensorFlow.js."
    TFJS_LAYERS
    "An ONNX folder (model.onnx + capstan-model.json), served with ONNX Runtime (onnxruntime-node)."
    ONNX
  }

  "One registered version of a model: an exported model (TensorFlow.js layers or ONNX) from a run's deploy stage."
  type ModelVersion {
    "The model name."
    model: String!
    "Version number, from 1, incremented per model name at registration."
    version: Int!
    "The id of the run whose deploy stage registered it."
    runId: String!
    "The id of the stage that registered it (the deploy stage)."
    stageId: String!
    "Where the exported model lives in the artifact store: artifact:<path>."
    artifactUri: String!
    "SHA-256 (64 lowercase hex digits) of the exported model's files; checked before it is served."
    sha256: String!
    "Size of the exported model's files, in bytes."
    bytes: Float!
    "How the version is stored: TFJS_LAYERS or ONNX."
    format: ModelFormat!
    "The runtime the deploy stage measured it with, e.g. onnxruntime-node 1.30.0 (cpu) or tfjs 4.22.0 (wasm) (metrics.runtime); null when not recorded."
    runtime: String
    """
    What the deploy stage measured, as a JSON object: testAccuracy (fraction 0–1), p50LatencyMs and
    p99LatencyMs (one sample per request, in milliseconds), sizeBytes, tfBackend, …
    """
    metrics: JSON!
    "Accuracy on the held-out test set as a fraction 0–1 (metrics.testAccuracy); null when not measured."
    testAccuracy: Float
    "99th-percentile latency of one single-sample prediction, in milliseconds (metrics.p99LatencyMs); null when not measured."
    p99LatencyMs: Float
    "When it was registered."
    createdAt: DateTime!
    "Aliases pointing at this version, e.g. [production]; empty when none."
    aliases: [String!]!
    "Number of samples this API process has predicted with this version since it started (not persisted, not summed across API processes)."
    predictions: Int!
  }

  "A named pointer to one version of a model; production is the one served."
  type ModelAlias {
    "The alias name, e.g. production."
    alias: String!
    "The version it points at."
    version: Int!
    "When it was last moved."
    updatedAt: DateTime!
  }

  "One move of an alias, as recorded by the registry."
  type ModelAliasChange {
    "The alias that moved, e.g. production."
    alias: String!
    "The version it pointed at after the move."
    version: Int!
    "The version it pointed at before; null when the alias was set for the first time."
    previousVersion: Int
    "Why: promote (promoteModel), rollback (rollbackModel) or deploy <run id>/<stage id> (a deploy stage whose gates passed)."
    reason: String!
    "When it moved."
    at: DateTime!
  }

  "Who owns a model name: the API token that registered it first, or the one an admin granted it to. Only that token and admins may register versions of it or move its aliases."
  type ModelOwner {
    "The owning token's public id (the 12 hex digits after cap_); null: owned by admins only (a name claimed before owners were tokens; an admin may grant it with setModelOwner)."
    tokenId: String
    "The owning token's name when it was claimed or granted; null when no token owns it."
    name: String
    "The pipeline whose run claimed the name; null for a grant."
    pipeline: String
    "The run that claimed the name; null for a grant."
    runId: String
    "When it was claimed or last granted."
    since: DateTime!
    "The admin (token name) who granted it; null when it was claimed by a deploy."
    grantedBy: String
  }

  "How deploy stages may move a model's production alias."
  type ModelPromotionPolicy {
    "The model name."
    name: String!
    "Whether every move of production by a deploy stage must pass champion/challenger (noWorseThan: production, measured on the candidate's test set), whatever the spec says. True unless an admin opted the model out."
    requireChampionChallenger: Boolean!
    "The largest tolerance (accuracy as a fraction 0–1) a spec's noWorseThan may use while champion/challenger is required; a larger one is capped to it. 0.02 (2 points of accuracy) by default."
    maxTolerance: Float!
    "The admin (token name) who set this policy; null for the default."
    setBy: String
    "When it was set; null for the default."
    setAt: DateTime
  }

  "A model name in the registry, with its versions and aliases."
  type RegisteredModel {
    "The model name (letters, digits, ., - and _; up to 64 characters)."
    name: String!
    "All its versions, newest first."
    versions: [ModelVersion!]!
    "Its aliases, by alias name."
    aliases: [ModelAlias!]!
    "The version the production alias points at (the one predictions use); null when production is not set."
    production: ModelVersion
    "The version this API process is serving now; null until the first prediction or promotion loads one."
    servingVersion: Int
    "The runtime serving it in this API process, e.g. onnxruntime-node 1.30.0 (cpu) or tfjs 4.22.0 (wasm); null when none is loaded."
    servingRuntime: String
    "Every move of the production alias, oldest first."
    productionHistory: [ModelAliasChange!]!
    "Who owns the name (admins only: FORBIDDEN for other roles); null when nobody has claimed it."
    owner: ModelOwner
    "How deploy stages may move its production alias."
    promotionPolicy: ModelPromotionPolicy!
  }

  extend type Query {
    "Every registered model, by name. Errors: MODELS_UNAVAILABLE (the models module is not running)."
    models: [RegisteredModel!]!
    "One registered model; null when no version of it is registered. Errors: MODELS_UNAVAILABLE."
    model(
      "The model name, e.g. mnist-mlp."
      name: String!
    ): RegisteredModel
    """
    Predicts with the production version this API process serves (it follows the production alias,
    re-read every few seconds, and swaps versions without dropping requests); the predictions are
    booked in the ledger as realised revenue of the run that produced the version. Same as POST /models/<name>/predict. Errors: MODEL_NOT_FOUND (unknown
    model), NOT_DEPLOYED (no production version), BAD_INPUT (empty, more than 1024 samples, a sample of
    the wrong size, a number that is not finite, or a value outside the range the version was trained
    on — the message says what was expected, e.g. values in [0, 1] for normalised pixels),
    MODEL_UNAVAILABLE (the version cannot be loaded, e.g. its artifact is missing or fails its hash
    check), MODELS_UNAVAILABLE.
    """
    predict(
      "The model name, e.g. mnist-mlp."
      model: String!
      "The samples, 1–1024, each flat: as many numbers as the model's input has (784 floats in 0–1 for a 28×28 MNIST image, or 0–255 with encoding RAW)."
      inputs: [[Float!]!]!
      "Whether inputs are already normalised (NORMALIZED, the default) or raw values for the server to normalise (RAW)."
      encoding: InputEncoding = NORMALIZED
    ): Prediction!
  }

  extend type Mutation {
    """
    Points production at a version, which this API process then loads and serves before answering;
    returns the model. Needs the operator role and the model's owning token, or an admin. Errors:
    FORBIDDEN (the token does not own the model), MODEL_NOT_FOUND, VERSION_NOT_FOUND,
    MODEL_UNAVAILABLE (the version cannot be loaded; production has moved all the same), MODELS_UNAVAILABLE.
    """
    promoteModel(
      "The model name."
      name: String!
      "The version production should point at."
      version: Int!
    ): RegisteredModel!
    """
    Points production back at an earlier version (served before this returns); returns the model.
    Needs the operator role and the model's owning token, or an admin.
    Errors: FORBIDDEN (the token does not own the model), MODEL_NOT_FOUND, VERSION_NOT_FOUND, NOT_DEPLOYED (production is not set), BAD_ROLLBACK
    (version is not earlier than production's; use promoteModel to move forward), MODEL_UNAVAILABLE,
    MODELS_UNAVAILABLE.
    """
    rollbackModel(
      "The model name."
      name: String!
      "An earlier version than the one production points at now."
      version: Int!
    ): RegisteredModel!
    "Gives a model name to a token (grant or transfer; admins only): from then on that token and admins may register versions and move its aliases. The name need not be registered yet. Errors: BAD_ARGUMENT (no such token, or it is revoked), BAD_MODEL_NAME."
    setModelOwner(
      "The model name."
      name: String!
      "The public id of the token to own it (the 12 hex digits after cap_; see tokens)."
      tokenId: String!
    ): ModelOwner!
    "Sets whether deploy stages need champion/challenger to move the model's production (admins only; recorded with the admin's name). A spec cannot turn it off. Errors: BAD_ARGUMENT (maxTolerance outside 0–1), BAD_MODEL_NAME."
    setModelPromotionPolicy(
      "The model name."
      name: String!
      "true (the default for every model): every promotion by a deploy stage must be no worse than production on the same test set; false: only the spec's gates apply."
      requireChampionChallenger: Boolean!
      "The largest tolerance a spec's noWorseThan may use while champion/challenger is required (accuracy fraction 0–1; default 0.02)."
      maxTolerance: Float
    ): ModelPromotionPolicy!
  }
`;
