// Azure OpenAI account + one chat model deployment.
// Key auth is disabled: the app calls the endpoint with an Entra ID token for its
// managed identity (role: Cognitive Services OpenAI User).

@description('Account name; also used as the custom subdomain of the endpoint.')
param name string

@description('Azure region.')
param location string

@description('Tags applied to the account.')
param tags object

@description('Deployment name the app passes as AZURE_OPENAI_DEPLOYMENT.')
param deploymentName string

@description('Model name, e.g. gpt-4o-mini.')
param modelName string

@description('Model version, e.g. 2024-07-18 for gpt-4o-mini.')
param modelVersion string

@description('Deployment SKU, e.g. GlobalStandard (pay per token).')
param skuName string

@description('Deployment capacity in thousands of tokens per minute.')
param capacity int

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  name: name
  location: location
  tags: tags
  kind: 'OpenAI'
  sku: {
    name: 'S0'
  }
  properties: {
    // A custom subdomain is required for Entra ID (token) authentication.
    customSubDomainName: name
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
    }
  }
}

resource chatDeployment 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = {
  parent: account
  name: deploymentName
  sku: {
    name: skuName
    capacity: capacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: modelName
      version: modelVersion
    }
  }
}

output name string = account.name
output endpoint string = account.properties.endpoint
output deploymentName string = chatDeployment.name
