// Flex Consumption plan + the Python Function app and its app settings.
// Every app setting below is a name the app (or the Functions host) reads;
// tests/test_infra.py cross-checks them against the code.

@description('Function app name.')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Azure region.')
param location string

@description('Tags applied to the plan and the app.')
param tags object

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity (selects it for token requests).')
param identityClientId string

@description('Storage account for AzureWebJobsStorage and the deployment package.')
param storageAccountName string

@description('Blob container holding the deployment package.')
param deploymentContainerName string

@description('Table of the stream journal in that storage account.')
param journalTableName string

@description('Application Insights component name.')
param applicationInsightsName string

@description('Upper bound on scale-out instances (a cost cap).')
param maximumInstanceCount int

@description('Azure OpenAI endpoint, e.g. https://<name>.openai.azure.com/.')
param openAiEndpoint string

@description('Azure OpenAI chat deployment name.')
param openAiDeploymentName string

@description('Azure OpenAI data-plane API version the app sends.')
param openAiApiVersion string

@description('Durable Task Scheduler endpoint (https://...durabletask.io).')
param schedulerEndpoint string

@description('Durable Task Scheduler task hub name.')
param taskHubName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Flex Consumption: Linux only, one app per plan, scales to zero.
resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  // azd finds the deploy target through this tag; it must match azure.yaml.
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // On Flex Consumption the runtime, scale and deployment source live here,
    // not in FUNCTIONS_WORKER_RUNTIME / WEBSITE_RUN_FROM_PACKAGE app settings.
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: 2048
        maximumInstanceCount: maximumInstanceCount
      }
      // 3.11 matches the local toolchain, and the Python that azd's remote
      // build uses on Flex Consumption (see docs/deploy.md).
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }

  resource appSettings 'config' = {
    name: 'appsettings'
    properties: {
      // --- Functions host: storage through the managed identity, no keys ---
      AzureWebJobsStorage__accountName: storage.name
      AzureWebJobsStorage__credential: 'managedidentity'
      AzureWebJobsStorage__clientId: identityClientId
      // --- Application Insights with Entra ID auth (local auth is off) ---
      APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
      APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
      // --- Durable Task Scheduler backend (host.json names these) ---
      DURABLE_TASK_SCHEDULER_CONNECTION_STRING: 'Endpoint=${schedulerEndpoint};Authentication=ManagedIdentity;ClientID=${identityClientId}'
      TASKHUB_NAME: taskHubName
      // --- LLM: Azure OpenAI with a token for the identity below ---
      LLM_PROVIDER: 'azure_openai'
      AZURE_OPENAI_ENDPOINT: openAiEndpoint
      AZURE_OPENAI_DEPLOYMENT: openAiDeploymentName
      AZURE_OPENAI_API_VERSION: openAiApiVersion
      // Tells azure-identity which of the app's identities to use.
      AZURE_CLIENT_ID: identityClientId
      // --- Stream journal (core/journal.py): live turn events in a table of the app's own
      // storage account, reached with the identity (Storage Table Data Contributor) ---
      AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
      STREAM_JOURNAL_BACKEND: 'table'
      STREAM_JOURNAL_TABLE: journalTableName
      // Entries of a finished turn are deleted after this many seconds (resume window).
      STREAM_JOURNAL_RETENTION_SECONDS: '3600'
      // --- FastAPI mode (streamed HTTP): the Python 3.11 worker starts its HTTP v2 server
      // only when it indexes at init (docs/streaming.md, "What it needs in Azure") ---
      PYTHON_ENABLE_INIT_INDEXING: '1'
    }
  }
}

output name string = functionApp.name
output url string = 'https://${functionApp.properties.defaultHostName}'
