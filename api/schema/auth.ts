// GraphQL SDL of the auth module: API tokens and roles. Every type, field, argument and enum
// value is described (test/api/schema-lint.test.ts lints it).
export const authTypeDefs = /* GraphQL */ `
  "What a token may do. Every request needs a token (Authorization: Bearer <token>)."
  enum Role {
    "Queries and subscriptions: runs, plugins, pipelines, schedules, ledger, models."
    VIEWER
    "Predictions only (the predict query and POST /models/:name/predict): for services that call a model."
    PREDICTOR
    "A viewer that also predicts and runs pipelines: start, decide, cancel, resume, save, schedule, emit events, raise budgets."
    OPERATOR
    "Everything, including promoteModel, rollbackModel, deploying to another pipeline's model name and tokens."
    ADMIN
  }

  "An API token as admins see it. The secret is shown once, when the token is created, and stored only as a hash."
  type ApiToken {
    "Public id of the token (the part after cap_ in the token itself); revokeToken takes it."
    id: ID!
    "Who or what holds the token, e.g. ci or alice."
    name: String!
    "What the token may do."
    role: Role!
    "When the token was created."
    createdAt: DateTime!
    "When the token stops working; null = never."
    expiresAt: DateTime
    "When the token was revoked; null while it is not."
    revokedAt: DateTime
    "True while the token is neither revoked nor expired."
    active: Boolean!
  }

  "A new token: the secret and its record."
  type CreatedToken {
    "The token to send as Authorization: Bearer <token>. Shown only now: Capstan keeps a hash, not the token."
    token: String!
    "The token's record."
    info: ApiToken!
  }

  "Who the request's token belongs to."
  type Principal {
    "Public id of the token."
    tokenId: ID!
    "The token's name."
    name: String!
    "The token's role."
    role: Role!
  }

  extend type Query {
    "Every API token, active or not (admin). Secrets are never shown."
    tokens: [ApiToken!]!
    "The token this request was made with: its name and role (any valid token)."
    whoami: Principal!
  }

  extend type Mutation {
    "Creates a token (admin). The secret is returned once. Errors: BAD_ARGUMENT (name, role or an expiry in the past)."
    createToken(
      "Who or what will hold the token: 1–64 letters, digits, spaces or . _ @ -."
      name: String!
      "What the token may do."
      role: Role!
      "When the token stops working (ISO-8601); omit for a token that does not expire."
      expiresAt: DateTime
    ): CreatedToken!
    "Revokes a token at once (admin); requests with it are refused from then on. Errors: NOT_FOUND."
    revokeToken(
      "The token's public id (ApiToken.id)."
      id: ID!
    ): ApiToken!
  }
`;
